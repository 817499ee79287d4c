//! `ratio` against values computed by Python's `difflib.SequenceMatcher(None, a, b).ratio()`
//! (CPython 3.11), including strings of 200+ characters where the autojunk heuristic applies.

use serde::Deserialize;

#[derive(Deserialize)]
struct Row {
    a: String,
    b: String,
    /// Python's `repr` of the ratio: parsed exactly by `str::parse`.
    ratio: String,
}

#[test]
fn matches_python_difflib() {
    let rows: Vec<Row> =
        serde_json::from_str(include_str!("data/difflib_ratios.json")).expect("table parses");
    assert!(rows.len() > 50);
    assert!(rows.iter().any(|r| r.b.chars().count() >= 200));
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let expected: f64 = row.ratio.parse().expect("ratio is a float");
        let got = sde_metrics::ratio(&row.a, &row.b);
        if got != expected {
            failures.push(format!(
                "row {i} (len {} / {}): got {got}, python {}",
                row.a.chars().count(),
                row.b.chars().count(),
                row.ratio
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
