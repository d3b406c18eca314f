//! The `casebook` command line: serve, migrate, create-admin, seed-demo, verify-audit,
//! export.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use diesel::Connection;

use casebook::audit::{Actor, RequestMeta};
use casebook::auth::password::{check_policy, Hasher};
use casebook::auth::{Role, Scope};
use casebook::config::{Environment, Settings};
use casebook::db;
use casebook::services::users::{create_user, NewUser};
use casebook::startup::Application;

#[derive(Parser)]
#[command(
    name = "casebook",
    version,
    about = "Electronic data capture for multicenter anakinra trials"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the schema must be migrated).
    Serve,
    /// Apply pending database migrations (under an advisory lock).
    Migrate,
    /// Create an administrator; the password is read from standard input.
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
    },
    /// Load the demo trial: sites FR01-FR04, one user per role, and at FR01-FR03 two
    /// subjects each with consent and records of every form of the running study (not in
    /// production; running it again adds nothing).
    SeedDemo {
        /// sites and accounts only, no subjects
        #[arg(long)]
        accounts_only: bool,
    },
    /// Recompute the audit hash chain; exit 1 naming the first bad row.
    VerifyAudit,
    /// Study definitions (config/studies/*.toml).
    Study {
        #[command(subcommand)]
        command: StudyCommand,
    },
    /// Export the study to files, as the API does (all sites, names not pseudonymised);
    /// every file is audited as `system:cli`.
    Export {
        /// csv: one file per form; odm: one ODM 1.3.2 file; sdtm-xpt, sdtm-csv, sdtm-json:
        /// one file per SDTM domain (sdtm-xpt and sdtm-json, Dataset-JSON v1.1, with their
        /// Define-XML 2.1, define.xml)
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// directory for the files (created if missing)
        #[arg(long)]
        out: PathBuf,
        /// only this site's records (site code)
        #[arg(long)]
        site: Option<String>,
        /// csv only: also records marked deleted
        #[arg(long)]
        include_deleted: bool,
    },
}

#[derive(Subcommand)]
enum StudyCommand {
    /// Check a definition file without a database: print each error as FILE:LINE: message
    /// and exit 1, or print a summary and exit 0.
    Check { file: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    Csv,
    Odm,
    SdtmXpt,
    SdtmCsv,
    SdtmJson,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("casebook: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // needs neither the settings nor a database: it runs wherever the file is
    if let Command::Study {
        command: StudyCommand::Check { file },
    } = &cli.command
    {
        return study_check(file);
    }
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => return fail(format!("configuration error: {e}")),
    };
    casebook::telemetry::init_logging();
    match cli.command {
        Command::Serve => serve(settings),
        Command::Migrate => match db::migrate(&settings.database.url) {
            Ok(applied) => {
                println!("migrations applied: {}", applied.len());
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("migration failed: {}", one_line(&e))),
        },
        Command::CreateAdmin { email, name } => create_admin(&settings, &email, &name),
        Command::SeedDemo { accounts_only } => seed_demo(&settings, accounts_only),
        Command::VerifyAudit => verify_audit(&settings),
        Command::Study {
            command: StudyCommand::Check { file },
        } => study_check(&file),
        Command::Export {
            format,
            out,
            site,
            include_deleted,
        } => export(&settings, format, &out, site, include_deleted),
    }
}

fn study_check(file: &Path) -> ExitCode {
    use std::io::Write;
    // written, not println!'d: a closed pipe (`| head`) is not a panic
    let mut out = std::io::stdout().lock();
    match casebook::services::study::check_file(file) {
        Ok(d) => {
            let _ = writeln!(out, "{}: ok", file.display());
            let _ = writeln!(out, "{}", casebook::domain::study::summary(&d));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                let _ = writeln!(out, "{e}");
            }
            let _ = out.flush();
            eprintln!("casebook: {} error(s) in {}", errors.len(), file.display());
            ExitCode::FAILURE
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn serve(settings: Settings) -> ExitCode {
    if let Err(e) = db::check_reachable(&settings.database.url) {
        return fail(format!("database unreachable (DATABASE_URL): {e}"));
    }
    let current = diesel::PgConnection::establish(&settings.database.url)
        .map_err(|e| e.to_string())
        .and_then(|mut c| db::migrations_current(&mut c).map_err(|e| e.to_string()));
    match current {
        Ok(true) => {}
        Ok(false) => return fail("database schema is not current: run `casebook migrate` first"),
        Err(e) => return fail(format!("cannot read the migration state: {e}")),
    }
    let listen = settings.listen;
    let app = match Application::build(settings) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    tracing::info!(%listen, "casebook serving");
    let run = actix_web::rt::System::new().block_on(app.run_until_stopped());
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("server stopped: {e}")),
    }
}

fn connect(settings: &Settings) -> Result<diesel::PgConnection, ExitCode> {
    diesel::PgConnection::establish(&settings.database.url).map_err(|e| {
        fail(format!(
            "database unreachable (DATABASE_URL): {}",
            one_line(&e.to_string())
        ))
    })
}

fn read_password() -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        eprintln!("Password (15-128 characters), then Enter:");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

fn create_admin(settings: &Settings, email: &str, name: &str) -> ExitCode {
    let password = match read_password() {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot read the password: {e}")),
    };
    if let Err(e) = check_policy("password", &password, email) {
        return fail(format!("{}: {}", e.field, e.message));
    }
    let hasher = match Hasher::new(&settings.password) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let hash = match hasher.hash(&password) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let mut conn = match connect(settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let meta = cli_meta("create-admin");
    let result = conn.transaction(|conn| {
        create_user(
            conn,
            &NewUser {
                email,
                name,
                role: Role::Admin,
                password_hash: &hash,
                site_ids: &[],
            },
            None,
            &meta,
        )
    });
    match result {
        Ok(id) => {
            println!("admin created: id {id}, {email}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot create the admin: {e}")),
    }
}

fn cli_meta(command: &str) -> RequestMeta {
    RequestMeta {
        request_id: format!("cli:{command}:{}", uuid::Uuid::new_v4()),
        client_addr: None,
    }
}

/// The demo trial (services::demo). Passwords are fixed and printed: this is for trying
/// Casebook out, and refuses to run in production.
fn seed_demo(settings: &Settings, accounts_only: bool) -> ExitCode {
    use casebook::services::demo;
    if settings.env == Environment::Production {
        return fail("seed-demo refuses to run when CASEBOOK_ENV=production");
    }
    let hash = match Hasher::new(&settings.password).and_then(|h| h.hash(demo::PASSWORD)) {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let protocol = match casebook::domain::protocol::Protocol::load(&settings.protocol) {
        Ok(p) => p,
        Err(e) => return fail(format!("protocol file: {e}")),
    };
    let study = match casebook::services::study::load(&settings.study) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    if let Err(code) = connect(settings) {
        return code;
    }
    let (pool, gone) = db::build_pool(&settings.database, "casebook seed-demo");
    let code = seed_with(&pool, &hash, &protocol, &study, accounts_only);
    // r2d2's threads reconnect while they live: the process exits once they are gone, not
    // under them (a thread inside libpq at exit crashed the process, issue 15)
    drop(pool);
    if !gone.wait(std::time::Duration::from_secs(15)) {
        eprintln!("casebook seed-demo: warning: the database pool outlived 15 s");
    }
    code
}

fn seed_with(
    pool: &db::Pool,
    hash: &str,
    protocol: &casebook::domain::protocol::Protocol,
    study: &casebook::domain::study::Definition,
    accounts_only: bool,
) -> ExitCode {
    use casebook::services::demo;
    // records are entered under the running definition's published version, as the server
    // publishes it at start; accounts alone leave that to the server
    if !accounts_only {
        if let Err(e) = casebook::services::study::publish(pool, study, "casebook seed-demo") {
            return fail(e);
        }
    }
    let mut conn = match pool.get() {
        Ok(c) => c,
        Err(e) => return fail(format!("database unreachable (DATABASE_URL): {e}")),
    };
    let meta = cli_meta("seed-demo");
    let result =
        conn.transaction(|conn| demo::seed(conn, hash, protocol, study, !accounts_only, &meta));
    match result {
        Ok(seeded) => {
            println!(
                "Demo trial ready: {} new accounts, {} new subjects ({} records) in study {}.",
                seeded.accounts.len(),
                seeded.subjects.len(),
                seeded.records,
                study.study.id
            );
            if !seeded.subjects.is_empty() {
                println!("  subjects: {}", seeded.subjects.join(", "));
            }
            println!(
                "Sites FR01-FR04. Accounts (password: `{}`):",
                demo::PASSWORD
            );
            for a in &demo::ACCOUNTS {
                println!(
                    "  {:<13} {}  {}",
                    a.role.as_str(),
                    a.email,
                    a.sites.join(",")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("seed-demo failed: {e}")),
    }
}

fn verify_audit(settings: &Settings) -> ExitCode {
    let mut conn = match connect(settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // A second connection checks half the ranges: reading is the slow part and PostgreSQL
    // produces the rows on two backends at once. Without it, one connection does it all.
    let report = match diesel::PgConnection::establish(&settings.database.url) {
        Ok(mut helper) => casebook::audit::verify_parallel(&mut conn, &mut [&mut helper]),
        Err(_) => casebook::audit::verify(&mut conn),
    };
    match report {
        Ok(r) if r.ok => {
            println!(
                "audit chain ok: {} rows verified, {} pending sealing",
                r.rows_checked, r.pending
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!(
                "audit chain BROKEN at audit_log id {}: {} ({} rows verified before it)",
                r.first_bad_id.unwrap_or_default(),
                r.problem.unwrap_or_default(),
                r.rows_checked
            );
            ExitCode::FAILURE
        }
        Err(e) => fail(format!("cannot verify: {e}")),
    }
}

/// `casebook export`: one export (one transaction, one audit row) per file. Each file is
/// written as `NAME.part` and renamed once complete and audited; a failed one is removed.
fn export(
    settings: &Settings,
    format: ExportFormat,
    dir: &Path,
    site: Option<String>,
    include_deleted: bool,
) -> ExitCode {
    use casebook::export::{self, Filters, Form, Job, Kind, Table};
    use diesel::prelude::*;

    if include_deleted && format != ExportFormat::Csv {
        return fail("--include-deleted applies to --format csv only");
    }
    let protocol = match casebook::domain::protocol::Protocol::load(&settings.protocol) {
        Ok(p) => Arc::new(p),
        Err(e) => return fail(format!("protocol file: {e}")),
    };
    let study = match casebook::services::study::load(&settings.study) {
        Ok(d) => Arc::new(d),
        Err(e) => return fail(e),
    };
    let mut conn = match connect(settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let site_id = match &site {
        None => None,
        Some(code) => {
            use casebook::schema::sites;
            let id: QueryResult<Option<i64>> = sites::table
                .filter(sites::code.eq(code))
                .select(sites::id)
                .first(&mut conn)
                .optional();
            match id {
                Ok(Some(id)) => Some(id),
                Ok(None) => return fail(format!("no site with code {code:?}")),
                Err(e) => return fail(format!("cannot read the sites: {e}")),
            }
        }
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail(format!("cannot create {}: {e}", dir.display()));
    }
    let domains = export::sdtm::domains(&study);
    let kinds: Vec<Kind> = match format {
        ExportFormat::Csv => [
            Form::Subjects,
            Form::Consents,
            Form::Injections,
            Form::Temperatures,
            Form::AdverseEvents,
            Form::Queries,
        ]
        .into_iter()
        .map(Kind::Form)
        .chain(study.record_forms().map(|f| Kind::Records(f.id.clone())))
        .collect(),
        ExportFormat::Odm => vec![Kind::Odm],
        // the datasets and their Define-XML, whose def:leaf names them
        ExportFormat::SdtmXpt => domains
            .into_iter()
            .map(|d| Kind::Sdtm(d, Table::Xpt))
            .chain([Kind::Define])
            .collect(),
        ExportFormat::SdtmCsv => domains
            .into_iter()
            .map(|d| Kind::Sdtm(d, Table::Csv))
            .collect(),
        // Dataset-JSON's metaDataRef names define.xml
        ExportFormat::SdtmJson => domains
            .into_iter()
            .map(|d| Kind::Sdtm(d, Table::Json))
            .chain([Kind::Define])
            .collect(),
    };
    // one request id and one time stamp for the files of this run
    let meta = cli_meta("export");
    let started = chrono::Utc::now();
    let study_id = protocol.file.study.id.clone();
    let tty = std::io::stderr().is_terminal();
    for kind in kinds {
        let name = kind.file_name(&study_id, started);
        let entity = kind.entity().to_owned();
        let path = dir.join(&name);
        let part = dir.join(format!("{name}.part"));
        let file = match std::fs::File::create(&part) {
            Ok(f) => f,
            Err(e) => return fail(format!("cannot create {}: {e}", part.display())),
        };
        let job = Job {
            kind,
            filters: Filters {
                site: site.clone(),
                site_id,
                include_deleted,
                ..Filters::default()
            },
            scope: Scope::AllSites,
            protocol: protocol.clone(),
            study: study.clone(),
            // not used: `run_offline` audits as `system:cli`, with no user
            actor: Actor {
                user_id: 0,
                role: "system:cli".into(),
            },
            // all sites, real names (whoever runs this can read the database anyway)
            role: Role::Admin,
            meta: meta.clone(),
            started,
            slot: None,
        };
        let progress: Option<Box<dyn Fn(u64)>> = if tty {
            let last = std::cell::Cell::new(std::time::Instant::now());
            let label = name.clone();
            Some(Box::new(move |rows| {
                if last.get().elapsed() >= std::time::Duration::from_millis(200) {
                    last.set(std::time::Instant::now());
                    eprint!("\r{label}: {rows} rows");
                }
            }))
        } else {
            None
        };
        let result = export::run_offline(
            &mut conn,
            job,
            "cli",
            export::sink::Sink::writer(file),
            progress,
        );
        if tty {
            // clear the progress line
            eprint!("\r\x1b[2K");
        }
        match result {
            Ok(w) => {
                if let Err(e) = std::fs::rename(&part, &path) {
                    return fail(format!("cannot rename {}: {e}", part.display()));
                }
                println!(
                    "{}: {} rows, {} bytes, sha256 {}",
                    path.display(),
                    w.rows,
                    w.bytes,
                    w.sha256
                );
            }
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return fail(format!("export {entity} failed: {e}"));
            }
        }
    }
    ExitCode::SUCCESS
}
