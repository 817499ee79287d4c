//! Malformed inputs give errors that name the file, the place and what was expected.

use std::path::{Path, PathBuf};

use sde_data::load::{acsa, asap, conll, genia, maven, sentihood};
use sde_data::{DataError, Recipe};

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Asserts a `Malformed` error for `path` whose location and expectation contain the needles.
fn assert_malformed<T: std::fmt::Debug>(
    result: Result<T, DataError>,
    path: &Path,
    location: &str,
    expected: &str,
) {
    match result {
        Err(DataError::Malformed {
            path: p,
            location: l,
            expected: e,
            found,
        }) => {
            assert_eq!(p, path);
            assert!(l.contains(location), "location {l:?} lacks {location:?}");
            assert!(
                e.contains(expected),
                "expected {e:?} lacks {expected:?} (found {found:?})"
            );
        }
        other => panic!("expected a Malformed error, got {other:?}"),
    }
}

#[test]
fn acsa_xml_errors_name_line_and_element() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.xml",
        "<sentences>\n<sentence id=\"1\">\n<text>ok</text>\n<aspectCategories>\n<aspectCategory category=\"food\" polarity=\"great\"/>\n</aspectCategories></sentence></sentences>",
    );
    assert_malformed(
        acsa::load(&p, "x", &Default::default()),
        &p,
        "line 5, <aspectCategory>",
        "polarity positive",
    );

    let p = write(
        dir.path(),
        "missing.xml",
        "<sentences>\n<sentence>\n<text>ok</text>\n<aspectCategories>\n<aspectCategory polarity=\"positive\"/></aspectCategories></sentence></sentences>",
    );
    assert_malformed(
        acsa::load(&p, "x", &Default::default()),
        &p,
        "line 5",
        "attribute `category`",
    );

    let p = write(
        dir.path(),
        "notext.xml",
        "<sentences>\n<sentence/>\n</sentences>",
    );
    assert_malformed(
        acsa::load(&p, "x", &Default::default()),
        &p,
        "line 2, <sentence>",
        "a <text> child",
    );

    let p = write(
        dir.path(),
        "truncated.xml",
        "<sentences>\n<sentence><text>cut",
    );
    assert_malformed(
        acsa::load(&p, "x", &Default::default()),
        &p,
        "line 2",
        "closing",
    );

    let p = write(dir.path(), "root.xml", "<reviews/>");
    assert_malformed(
        acsa::load(&p, "x", &Default::default()),
        &p,
        "line 1",
        "root element <sentences>",
    );

    let missing = dir.path().join("nope.xml");
    match acsa::load(&missing, "x", &Default::default()) {
        Err(DataError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
}

#[test]
fn acsa_unknown_category_names_the_recipe_list() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "c.xml",
        "<sentences><sentence><text>t</text><aspectCategories><aspectCategory category=\"wine\" polarity=\"positive\"/></aspectCategories></sentence></sentences>",
    );
    let options = acsa::AcsaOptions {
        categories: [("food".to_string(), "food".to_string())].into(),
        conflict: acsa::ConflictPolicy::Neutral,
    };
    assert_malformed(
        acsa::load(&p, "x", &options),
        &p,
        "line 1",
        "a category listed in the recipe (food)",
    );
}

#[test]
fn asap_csv_bad_label_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let header = "index,reviewbody,star,location_traffic,location_distance_from_business_district,location_easy_to_find,service_wait_time,service_waiters_attitude,service_parking_convenience,service_serving_speed,price_level,price_cost_effective,price_discount,environment_decoration,environment_noise,environment_space,environment_cleaness,dish_portion,dish_taste,dish_look,dish_recommendation";
    let good = "1,\"好吃,便宜\",5.0,-2,-2,-2,-2,1,-2,-2,0,-2,-2,-2,-2,-2,-2,-2,1,-2,-2";
    let bad = "2,差,1.0,-2,-2,-2,-2,-1,-2,-2,3,-2,-2,-2,-2,-2,-2,-2,-1,-2,-2";
    let p = write(
        dir.path(),
        "a.csv",
        &format!("\u{feff}{header}\n{good}\n{bad}\n"),
    );
    assert_malformed(
        asap::load(&p, "x", &Default::default()),
        &p,
        "line 3, column `price_level`",
        "a label 1, 0, -1 or -2",
    );

    let p = write(dir.path(), "short.csv", &format!("{header}\n1,x,5.0,-2\n"));
    assert_malformed(
        asap::load(&p, "x", &Default::default()),
        &p,
        "line 2",
        "21 fields",
    );

    let p = write(dir.path(), "nohead.csv", "id,text\n1,x\n");
    assert_malformed(
        asap::load(&p, "x", &Default::default()),
        &p,
        "line 1",
        "`reviewbody` or `review`",
    );

    let p = write(dir.path(), "ok.csv", &format!("{header}\n{good}\n"));
    let (records, _) = asap::load(&p, "x", &Default::default()).unwrap();
    assert_eq!(records[0].text, "好吃,便宜");
    assert_eq!(records[0].labels.len(), 3);
}

#[test]
fn json_loaders_name_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "g.json",
        "[\n{\"tokens\": [\"a\", \"b\"],\n \"entities\": [{\"start\": 1, \"end\": 3, \"type\": \"DNA\"}]}\n]",
    );
    assert_malformed(
        genia::load_json(&p, "x"),
        &p,
        "record 0, field \"entities\"",
        "token spans",
    );

    let p = write(
        dir.path(),
        "g2.json",
        "[\n{\"tokens\": [\"a\"],\n \"entities\": 7}\n]",
    );
    assert_malformed(
        genia::load_json(&p, "x"),
        &p,
        "line 3",
        "a JSON array of {tokens",
    );

    let p = write(
        dir.path(),
        "s.json",
        "[{\"id\": 1, \"text\": \"LOCATION1 is fine\", \"opinions\": [{\"sentiment\": \"Meh\", \"aspect\": \"price\", \"target_entity\": \"LOCATION1\"}]}]",
    );
    assert_malformed(
        sentihood::load(&p, "x"),
        &p,
        "record 0 (id 1), field \"sentiment\"",
        "Positive, Negative",
    );

    let p = write(
        dir.path(),
        "m.json",
        "{\"Attack\": [{\"id\": 5, \"tokens\": [\"x\"], \"events\": [{\"text\": \"x\", \"start\": 0, \"end\": 2, \"event_type\": \"Attack\"}]}]}",
    );
    assert_malformed(
        maven::load_fewshot(&p, "x"),
        &p,
        "\"Attack\"[0] (id 5), field \"events\"",
        "token spans",
    );

    let p = write(
        dir.path(),
        "h.json",
        "{\"input\": \"The sentence is: A storm hit. Output: \\n\", \"output\": \"[\\\"Catastrophe\\\", \\\"flood\\\"]\"}\n",
    );
    assert_malformed(
        maven::load_heuristic_prompts(&p, "x"),
        &p,
        "line 1, field \"output\"",
        "a trigger that occurs",
    );
}

#[test]
fn conll_errors_and_iob1_spans() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bad.conll", "EU NNP I-NP I-ORG\nrejects\n");
    assert_malformed(conll::load(&p, "x"), &p, "line 2", "`word POS chunk NER`");
    let p = write(dir.path(), "tag.conll", "EU NNP I-NP X-ORG\n");
    assert_malformed(conll::load(&p, "x"), &p, "line 1", "an NER tag");

    let text = "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\nBritish JJ I-NP B-MISC\nLamb NNP I-NP I-PER\nBlair NNP I-NP I-PER\n\n-DOCSTART- -X- O O\n";
    let p = write(dir.path(), "ok.conll", text);
    let (records, report) = conll::load(&p, "c").unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(report.get("document markers"), 1);
    let spans: Vec<(usize, usize, &str, &str)> = records[0]
        .entities
        .iter()
        .map(|e| (e.start_token, e.end_token, e.kind.as_str(), e.text.as_str()))
        .collect();
    assert_eq!(
        spans,
        [
            (0, 1, "ORG", "EU"),
            (2, 3, "MISC", "German"),
            (3, 4, "MISC", "British"),
            (4, 6, "PER", "Lamb Blair")
        ]
    );
}

#[test]
fn genia_raw_xml_nested_spans_and_tokenization() {
    let dir = tempfile::tempdir().unwrap();
    let xml = "<?xml version=\"1.0\"?>\n<set><article><title>\n<sentence><cons sem=\"G#other_name\"><cons sem=\"G#DNA_domain_or_region\"><cons sem=\"G#protein_molecule\">IL-2</cons> gene</cons> expression</cons> in <cons sem=\"G#cell_line\">Jurkat</cons>-derived cells &amp; <cons sem=\"(AND G#DNA_x G#DNA_y)\">x</cons>.</sentence>\n</title></article></set>";
    let p = write(dir.path(), "mini.xml", xml);
    let (records, report) = genia::load_raw(&p, "g").unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        r.tokens,
        [
            "IL-2",
            "gene",
            "expression",
            "in",
            "Jurkat",
            "-derived",
            "cells",
            "&",
            "x."
        ]
    );
    let spans: Vec<(usize, usize, &str)> = r
        .entities
        .iter()
        .map(|e| (e.start_token, e.end_token, e.kind.as_str()))
        .collect();
    assert_eq!(
        spans,
        [(0, 1, "protein"), (0, 2, "DNA"), (4, 5, "cell_line")]
    );
    assert_eq!(
        report.get("annotations dropped (other or coordinated class)"),
        2
    );

    let p = write(
        dir.path(),
        "bad.xml",
        "<set>\n<article>\n<sentence>a &foo; b</sentence></article></set>",
    );
    assert_malformed(
        genia::load_raw(&p, "g"),
        &p,
        "line 3",
        "a predefined XML entity",
    );
}

#[test]
fn recipe_errors_name_the_recipe_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "r.toml",
        "name = \"x\"\ntask = \"masa\"\nloader = \"conll2003\"\n[[splits]]\nname = \"train\"\nfiles = [\"a\"]\n",
    );
    match Recipe::load(&p) {
        Err(DataError::Recipe { path, message }) => {
            assert_eq!(path, p);
            assert!(
                message.contains("produces Ner records but task is Masa"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let p = write(
        dir.path(),
        "typo.toml",
        "name = \"x\"\ntask = \"masa\"\nloader = \"acsa-xml\"\nsplitz = []\n",
    );
    assert!(matches!(Recipe::load(&p), Err(DataError::Recipe { .. })));
    let p = write(
        dir.path(),
        "dom.toml",
        "name = \"x\"\ntask = \"masa\"\nloader = \"acsa-xml\"\n[[aspects]]\nkey = \"food\"\n[domains]\nd1 = [\"wine\"]\n[[splits]]\nname = \"t\"\nfiles = [\"a\"]\n",
    );
    match Recipe::load(&p) {
        Err(DataError::Recipe { message, .. }) => assert!(message.contains("`wine`"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Listing a directory with an invalid recipe names that recipe.
    assert!(matches!(
        Recipe::find_in(dir.path(), "x"),
        Err(DataError::Recipe { .. })
    ));
    let empty = tempfile::tempdir().unwrap();
    match Recipe::find_in(empty.path(), "nope") {
        Err(DataError::RecipeNotFound { known, .. }) => assert!(known.contains("synthetic-masa")),
        other => panic!("{other:?}"),
    }
    let masa = Recipe::find("mams-acsa").unwrap();
    assert!(matches!(
        masa.load_split("train", None),
        Err(DataError::DataRootRequired { .. })
    ));
    assert!(matches!(
        masa.load_split("validation", None),
        Err(DataError::UnknownSplit { .. })
    ));
    let err = masa.load_split("train", Some(dir.path())).unwrap_err();
    assert!(
        err.to_string().contains("mams/MAMS-ACSA/train.xml"),
        "{err}"
    );
}
