//! The demo's synthetic face generator: determinism, manifest format and ranges, group
//! balance, and that the drawn images agree with their labels.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use faceval_eval::demo::synth::{
    draw_face, generate, manipulation_region, specs, Expression, FaceSpec, AGE_BINS, EXPRESSIONS,
    GENDERS, IMAGES_PER_IDENTITY, IMAGE_SIZE, MANIFEST_COLUMNS, RACES, SKIN_TONES,
};
use faceval_eval::is_input_error;

fn read_manifest(path: &Path) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|r| {
            header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(str::to_string))
                .collect()
        })
        .collect();
    (header, rows)
}

#[test]
fn same_seed_gives_identical_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let da = generate(a.path(), 24, 5).unwrap();
    let db = generate(b.path(), 24, 5).unwrap();
    assert_eq!(
        std::fs::read(&da.manifest).unwrap(),
        std::fs::read(&db.manifest).unwrap()
    );
    assert_eq!(da.images.len(), 24);
    for (pa, pb) in da.images.iter().zip(&db.images) {
        assert_eq!(
            std::fs::read(pa).unwrap(),
            std::fs::read(pb).unwrap(),
            "{}",
            pa.display()
        );
    }
    assert_eq!(da.rows, db.rows);

    let c = tempfile::tempdir().unwrap();
    let dc = generate(c.path(), 24, 6).unwrap();
    assert_ne!(
        std::fs::read(&da.manifest).unwrap(),
        std::fs::read(&dc.manifest).unwrap()
    );
}

/// FairFace's bins, written out again here so the test does not trust the generator's table.
fn fairface_bin(age: u32) -> &'static str {
    match age {
        0..=2 => "0-2",
        3..=9 => "3-9",
        10..=19 => "10-19",
        20..=29 => "20-29",
        30..=39 => "30-39",
        40..=49 => "40-49",
        50..=59 => "50-59",
        60..=69 => "60-69",
        _ => "more than 70",
    }
}

#[test]
fn manifest_has_the_documented_columns_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let ds = generate(dir.path(), 60, 11).unwrap();
    let (header, rows) = read_manifest(&ds.manifest);
    assert_eq!(header, MANIFEST_COLUMNS);
    assert_eq!(rows.len(), 60);
    let ident = regex::Regex::new(r"^id_\d{4}$").unwrap();
    let one_decimal = regex::Regex::new(r"^-?\d+\.\d$").unwrap();
    for (i, (row, synth)) in rows.iter().zip(&ds.rows).enumerate() {
        let expected: Vec<String> = synth.record();
        let got: Vec<String> = MANIFEST_COLUMNS.iter().map(|c| row[*c].clone()).collect();
        assert_eq!(got, expected, "row {i}");
        assert_eq!(row["image"], format!("images/face_{i:05}.png"));
        assert!(dir.path().join(&row["image"]).is_file());
        assert!(EXPRESSIONS.contains(&row["expression"].as_str()), "{row:?}");
        for (col, limit) in [("yaw", 60.0), ("pitch", 30.0), ("roll", 30.0)] {
            assert!(one_decimal.is_match(&row[col]), "{col} = {}", row[col]);
            let v: f64 = row[col].parse().unwrap();
            assert!((-limit..=limit).contains(&v), "{col} = {v}");
        }
        assert!(SKIN_TONES.contains(&row["skin_tone"].as_str()));
        assert!(RACES.contains(&row["race"].as_str()));
        assert!(GENDERS.contains(&row["gender"].as_str()));
        let age: u32 = row["age"].parse().unwrap();
        assert!((1..=90).contains(&age), "age {age}");
        assert_eq!(row["age_bin"], fairface_bin(age), "age {age}");
        match row["manipulated"].as_str() {
            "real" => assert_eq!(row["manipulation"], "none"),
            "manipulated" => {
                assert!(["colour_shift", "blur_patch", "flip_patch"]
                    .contains(&row["manipulation"].as_str()))
            }
            other => panic!("manipulated = {other}"),
        }
        assert!(ident.is_match(&row["identity"]), "{}", row["identity"]);
    }
    let about: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("synth.json")).unwrap())
            .unwrap();
    assert_eq!(about["seed"], 11);
    assert_eq!(about["n"], 60);
}

#[test]
fn groups_are_balanced_and_identities_consistent() {
    let all = specs(400, 2024);
    let rows: Vec<Vec<String>> = all.iter().map(|s| s.record("x")).collect();
    let col = |name: &str| MANIFEST_COLUMNS.iter().position(|c| *c == name).unwrap();
    for (name, values) in [
        ("expression", &EXPRESSIONS[..]),
        ("skin_tone", &SKIN_TONES[..]),
        ("race", &RACES[..]),
        ("gender", &GENDERS[..]),
        ("age_bin", &AGE_BINS[..]),
        ("manipulated", &["real", "manipulated"][..]),
    ] {
        let mut counts: BTreeMap<&str, usize> = values.iter().map(|v| (*v, 0)).collect();
        for r in &rows {
            *counts
                .get_mut(r[col(name)].as_str())
                .unwrap_or_else(|| panic!("{name} = {}", r[col(name)])) += 1;
        }
        for (v, n) in &counts {
            assert!(
                *n >= 30,
                "{name} = {v} has only {n} of 400 images: {counts:?}"
            );
        }
    }

    // Every identity has IMAGES_PER_IDENTITY images that agree on everything an identity keeps.
    let mut by_id: BTreeMap<usize, Vec<&FaceSpec>> = BTreeMap::new();
    for s in &all {
        by_id.entry(s.identity).or_default().push(s);
    }
    assert_eq!(by_id.len(), 400 / IMAGES_PER_IDENTITY);
    for (id, group) in &by_id {
        assert_eq!(group.len(), IMAGES_PER_IDENTITY, "identity {id}");
        let first = group[0];
        for s in group {
            assert_eq!(
                (s.skin_tone, s.race, s.gender, s.age, s.look),
                (
                    first.skin_tone,
                    first.race,
                    first.gender,
                    first.age,
                    first.look
                ),
                "identity {id}"
            );
        }
    }

    // Poses spread over the whole range, both directions.
    let wide_yaw = all.iter().filter(|s| s.yaw.abs() > 30.0).count();
    assert!(wide_yaw > 120, "{wide_yaw} of 400 have |yaw| > 30");
    assert!(all.iter().any(|s| s.pitch < -20.0) && all.iter().any(|s| s.pitch > 20.0));
    assert!(all.iter().any(|s| s.roll < -20.0) && all.iter().any(|s| s.roll > 20.0));
}

#[test]
fn images_decode_and_match_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ds = generate(dir.path(), 12, 3).unwrap();
    for (path, row) in ds.images.iter().zip(&ds.rows) {
        let img = image::open(path).unwrap().to_rgb8();
        assert_eq!(
            img.dimensions(),
            (IMAGE_SIZE, IMAGE_SIZE),
            "{}",
            path.display()
        );
        assert!(
            img == draw_face(&row.spec),
            "{} is not what its row draws",
            path.display()
        );
    }
}

#[test]
fn zero_images_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = generate(dir.path(), 0, 1).unwrap_err();
    assert!(is_input_error(&err), "{err}");
}

#[test]
fn manipulation_is_visible_and_stays_in_its_region() {
    let all = specs(60, 9);
    let manipulated: Vec<&FaceSpec> = all.iter().filter(|s| s.manipulation.is_some()).collect();
    assert_eq!(manipulated.len(), 30);
    let mut kinds = BTreeSet::new();
    for spec in manipulated {
        let m = spec.manipulation.unwrap();
        kinds.insert(m.kind.name());
        let fake = draw_face(spec);
        let real = draw_face(&FaceSpec {
            manipulation: None,
            ..spec.clone()
        });
        let region = manipulation_region(spec).unwrap();
        let mut changed = 0;
        for (x, y, p) in fake.enumerate_pixels() {
            let q = real.get_pixel(x, y);
            let diff = (0..3)
                .map(|c| (p[c] as i32 - q[c] as i32).abs())
                .max()
                .unwrap();
            if diff == 0 {
                continue;
            }
            let (dx, dy) = (
                (x as f64 + 0.5 - region.cx) / region.rx,
                (y as f64 + 0.5 - region.cy) / region.ry,
            );
            assert!(
                dx * dx + dy * dy < 1.0,
                "{:?}: pixel ({x}, {y}) changed outside {region:?}",
                m.kind
            );
            if diff >= 12 {
                changed += 1;
            }
        }
        assert!(
            changed >= 40,
            "{:?} on {:?} changed only {changed} pixels visibly",
            m.kind,
            m.target
        );
    }
    assert_eq!(kinds.len(), 3, "{kinds:?}");
}

/// A frontal, neutral, unmanipulated face on a plain background, to move one thing at a time.
fn plain() -> FaceSpec {
    let mut s = specs(1, 77).remove(0);
    s.expression = Expression::Neutral;
    s.yaw = 0.0;
    s.pitch = 0.0;
    s.roll = 0.0;
    s.gaze = 0.0;
    s.age = 30;
    s.manipulation = None;
    s.background = [90, 120, 90];
    s.shirt = [40, 40, 120];
    s
}

/// Centroid of the eye whites (near-white, unsaturated pixels), optionally on one side only.
fn eye_white_centroid(img: &image::RgbImage, side: Option<bool>) -> (f64, f64) {
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
    for (x, y, p) in img.enumerate_pixels() {
        let (lo, hi) = (p.0.iter().min().unwrap(), p.0.iter().max().unwrap());
        let right = x as f64 >= IMAGE_SIZE as f64 / 2.0;
        if *lo > 205 && hi - lo < 25 && side.is_none_or(|s| s == right) {
            sx += x as f64;
            sy += y as f64;
            n += 1.0;
        }
    }
    assert!(n > 10.0, "no eye whites found");
    (sx / n, sy / n)
}

#[test]
fn head_pose_moves_the_features_the_documented_way() {
    let centre = IMAGE_SIZE as f64 / 2.0;
    let at = |yaw: f64, pitch: f64, roll: f64| {
        draw_face(&FaceSpec {
            yaw,
            pitch,
            roll,
            ..plain()
        })
    };
    let frontal = eye_white_centroid(&at(0.0, 0.0, 0.0), None);
    assert!(
        (frontal.0 - centre).abs() < 2.0,
        "frontal eyes at {frontal:?}"
    );
    // Positive yaw turns the face toward the image's right.
    let right = eye_white_centroid(&at(40.0, 0.0, 0.0), None);
    let left = eye_white_centroid(&at(-40.0, 0.0, 0.0), None);
    assert!(
        right.0 > centre + 6.0 && left.0 < centre - 6.0,
        "yaw ±40: {left:?} {right:?}"
    );
    // Positive pitch looks up.
    let up = eye_white_centroid(&at(0.0, 25.0, 0.0), None);
    let down = eye_white_centroid(&at(0.0, -25.0, 0.0), None);
    assert!(up.1 + 6.0 < down.1, "pitch ±25: up {up:?}, down {down:?}");
    // Positive roll tilts the head clockwise: the eye on the image's right drops.
    let tilted = at(0.0, 0.0, 25.0);
    let (l, r) = (
        eye_white_centroid(&tilted, Some(false)),
        eye_white_centroid(&tilted, Some(true)),
    );
    assert!(r.1 > l.1 + 6.0, "roll 25: left eye {l:?}, right eye {r:?}");
}

#[test]
fn every_expression_is_drawn_differently_in_the_face() {
    let base = plain();
    let images: Vec<(Expression, image::RgbImage)> = Expression::ALL
        .iter()
        .map(|&e| {
            (
                e,
                draw_face(&FaceSpec {
                    expression: e,
                    ..base.clone()
                }),
            )
        })
        .collect();
    for (i, (ea, a)) in images.iter().enumerate() {
        for (eb, b) in &images[i + 1..] {
            let differing = a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count();
            assert!(
                differing >= 30,
                "{ea:?} and {eb:?} differ in only {differing} pixels"
            );
        }
    }
}

#[test]
fn age_shows_as_grey_hair_and_lines() {
    let base = plain();
    let young = draw_face(&FaceSpec {
        age: 25,
        ..base.clone()
    });
    let old = draw_face(&FaceSpec {
        age: 80,
        ..base.clone()
    });
    // Hair whitens: the top of the head gets lighter and less saturated.
    let light_grey = |img: &image::RgbImage| {
        img.enumerate_pixels()
            .filter(|(_, y, p)| {
                *y < 50
                    && p.0.iter().min().unwrap() > &190
                    && p.0.iter().max().unwrap() - p.0.iter().min().unwrap() < 20
            })
            .count()
    };
    assert!(
        light_grey(&old) > light_grey(&young) + 200,
        "old {} young {}",
        light_grey(&old),
        light_grey(&young)
    );
}
