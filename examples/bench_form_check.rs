//! Times the definition's checks of one record (types, ranges, conditions, derivations, edit
//! checks: `domain::study::values::check`), the part of every form write that runs the
//! study's expressions, on Kawasaki's echocardiography (eight conditions and derivations).
//! No database. Wall-clock figures move with the machine's load; for a figure that does not,
//! count instructions: `valgrind --tool=callgrind target/release/examples/bench_form_check 2000`.
//!
//! Run: `cargo run --release --example bench_form_check -- [records]` (default 20000).

use std::hint::black_box;
use std::time::Instant;

use casebook::domain::study::parse;
use casebook::domain::study::values::check;
use serde_json::{json, Map, Value};

fn main() {
    let records: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let text = include_str!("../config/studies/kawasaki.toml");
    let def = parse("kawasaki.toml", text).unwrap_or_else(|e| panic!("{e:?}"));
    let form = def
        .form("echocardiography")
        .expect("kawasaki has echocardiography");
    let Value::Object(input) = json!({
        "performed_on": "2026-10-05", "lmca_z": 2.41, "lad_z": 1.2, "rca_z": 0.8,
        "dilatation": true, "aneurysm": true, "aneurysm_size_mm": 3.5
    }) else {
        unreachable!()
    };
    let input: Map<String, Value> = input;
    let started = Instant::now();
    for _ in 0..records {
        let checked = check(&def, form, black_box(&input)).expect("the record is valid");
        black_box(checked);
    }
    let elapsed = started.elapsed();
    println!(
        "{records} records checked in {:.3} s: {:.1} us per record",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / f64::from(records)
    );
}
