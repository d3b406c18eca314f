//! `casebook study check FILE`, run as a user runs it: the built binary, no database and no
//! settings (it runs from a directory without config/). Also: every shipped definition and
//! the documented example check clean.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A directory of its own for each test, without config/ or a database URL.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "casebook-study-check-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn check(file: &Path, cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_casebook"))
        .args(["study", "check"])
        .arg(file)
        .current_dir(cwd)
        .env_remove("DATABASE_URL")
        .env_remove("CASEBOOK_CONFIG_DIR")
        .output()
        .expect("run casebook")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_broken_definition_prints_each_error_with_its_line_and_exits_1() {
    let dir = scratch("broken");
    let example =
        std::fs::read_to_string(manifest().join("tests/studies/example.toml")).expect("example");
    let broken = example
        .replacen("codelist = \"vas_site\"", "codelist = \"vas_sites\"", 1)
        .replacen(
            "show_if = \"pain_mm > 40\"",
            "show_if = \"pain_nm > 40\"",
            1,
        );
    assert_ne!(broken, example, "the mutations apply");
    let file = dir.join("broken.toml");
    std::fs::write(&file, &broken).expect("write");
    let out = check(Path::new("broken.toml"), &dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let line = |needle: &str| {
        broken[..broken.find(needle).expect(needle)]
            .matches('\n')
            .count()
            + 1
    };
    let stdout = text(&out.stdout);
    let expected = [
        format!(
            "broken.toml:{}: code list `vas_sites` is referenced but not defined",
            line("\"vas_sites\"")
        ),
        format!(
            "broken.toml:{}: show_if of `site`: in `pain_nm > 40`: unknown item or constant `pain_nm`",
            line("pain_nm")
        ),
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(text(&out.stderr).contains("2 error(s) in broken.toml"));
}

#[test]
fn a_missing_file_is_an_error() {
    let dir = scratch("missing");
    let out = check(Path::new("nowhere.toml"), &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).starts_with("nowhere.toml: cannot read the study definition"));
}

#[test]
fn every_shipped_definition_checks_clean() {
    let dir = scratch("shipped");
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest().join("config/studies"))
        .expect("config/studies")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for expected in [
        "kawasaki.toml",
        "thera.toml",
        "mkd.toml",
        "nlrp12.toml",
        "ssc-calcinosis.toml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    files.push(manifest().join("tests/studies/example.toml"));
    for f in files {
        let out = check(&f, &dir);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}:\n{}{}",
            f.display(),
            text(&out.stdout),
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        assert!(stdout.contains(": ok\n"), "{stdout}");
        assert!(stdout.contains(" forms, "), "{stdout}");
    }
}

/// docs/study-definitions.md shows tests/studies/example.toml in full: the example a reader
/// copies is the one this suite checks.
#[test]
fn the_documented_example_is_the_checked_one() {
    let doc = std::fs::read_to_string(manifest().join("docs/study-definitions.md")).expect("doc");
    let example =
        std::fs::read_to_string(manifest().join("tests/studies/example.toml")).expect("example");
    assert!(
        doc.contains(&format!("```toml\n{example}```")),
        "docs/study-definitions.md must hold tests/studies/example.toml verbatim in a toml block"
    );
}

/// Until the form engine replaces them, config/protocols/*.toml run today's three forms:
/// the study definitions must say the same (codes, consent versions, dose, limits).
#[test]
fn the_definitions_agree_with_the_protocol_files_of_today() {
    use casebook::domain::protocol::{DoseRule, Protocol};
    use casebook::domain::study::{Dose, RuleKind};
    for name in ["kawasaki.toml", "thera.toml"] {
        let read =
            |dir: &str| std::fs::read_to_string(manifest().join(dir).join(name)).expect(name);
        let p = Protocol::parse(&read("config/protocols"))
            .expect("protocol")
            .file;
        let d = casebook::domain::study::parse(name, &read("config/studies")).expect("study");
        assert_eq!(d.study.id, p.study.id, "{name}");
        assert_eq!(d.study.name, p.study.name, "{name}");
        assert_eq!(d.consent.versions, p.consent_versions, "{name}");
        let codes = |list: &str| -> Vec<String> {
            d.codelist(list)
                .expect(list)
                .codes
                .iter()
                .map(|c| c.code.clone())
                .collect()
        };
        assert_eq!(codes("injection_site"), p.injection_sites, "{name}");
        assert_eq!(codes("temperature_method"), p.temperature_methods, "{name}");
        let ids = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            ids(d.eligibility.iter().map(|c| c.id.as_str()).collect()),
            ids(p.eligibility.iter().map(|c| c.id.as_str()).collect()),
            "{name}"
        );
        let t = &d.treatments[0];
        assert_eq!(
            t.max_days,
            u32::try_from(p.limits.max_treatment_days).ok(),
            "{name}"
        );
        assert_eq!(
            t.tolerance_percent.to_string().parse::<f64>().ok(),
            Some(p.limits.dose_tolerance_percent)
        );
        assert_eq!(
            t.start_window_days.map(|(a, b)| [a as i32, b as i32]),
            p.limits.treatment_start_window_days,
            "{name}"
        );
        let f = |b: &bigdecimal::BigDecimal| b.to_string().parse::<f64>().ok();
        match (&t.dose, &p.dose) {
            (Dose::Fixed { mg }, DoseRule::Fixed { mg: want }) => assert_eq!(f(mg), Some(*want)),
            (
                Dose::PerKg {
                    mg_per_kg,
                    escalation,
                },
                DoseRule::PerKg {
                    mg_per_kg: want,
                    escalation: want_e,
                },
            ) => {
                assert_eq!(f(mg_per_kg), Some(*want));
                assert_eq!(
                    escalation
                        .as_ref()
                        .map(|e| (e.from_day as i32, f(&e.mg_per_kg))),
                    want_e.as_ref().map(|e| (e.from_day, Some(e.mg_per_kg)))
                );
            }
            other => panic!("{name}: dose rules differ: {other:?}"),
        }
        let fever = d
            .rules
            .iter()
            .find(|r| r.kind == RuleKind::Fever)
            .expect("fever rule");
        assert_eq!(
            fever.threshold.as_ref().and_then(f),
            Some(p.limits.fever_threshold_celsius)
        );
    }
}
