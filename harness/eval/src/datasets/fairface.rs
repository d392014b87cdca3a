//! FairFace (joojs/fairface): `fairface_label_{train,val}.csv` with header
//! `file,age,gender,race,service_test`, e.g. `val/1.jpg,20-29,Male,White,True`. The `file`
//! paths are relative to the image folder (`fairface-img-margin025-trainval/`), which is
//! `dataset.images` or, by default, the CSV's own folder.

use std::collections::BTreeMap;
use std::path::Path;

use super::bins::FAIRFACE_AGE_BINS;
use super::common::{check_image, csv_rows, infer_field, resolve, unknown_label, Collector, Opts};
use super::Ctx;
use crate::error::input_error;
use crate::item::{Item, ReadOutcome, Target};
use crate::task::DatasetSpec;

const KEYS: &[&str] = &["service_test_only"];

/// FairFace's gender labels, as its label CSVs spell them.
pub const FAIRFACE_GENDERS: [&str; 2] = ["Male", "Female"];

/// FairFace's seven race groups, as its label CSVs spell them.
pub const FAIRFACE_RACES: [&str; 7] = [
    "East Asian",
    "Indian",
    "Black",
    "White",
    "Middle Eastern",
    "Latino_Hispanic",
    "Southeast Asian",
];

pub(super) fn read(spec: &DatasetSpec, ctx: &Ctx, data_root: &Path) -> anyhow::Result<ReadOutcome> {
    let opts = Opts::new("fairface", &spec.options, KEYS)?;
    let service_test_only = opts.bool("service_test_only", false)?;
    let csv_path = resolve(data_root, &spec.path);
    if !csv_path.is_file() {
        let hint = if csv_path.is_dir() {
            " (this is a folder; point dataset.path at the CSV inside it)"
        } else {
            ""
        };
        return Err(input_error(format!(
            "dataset.path = {}: FairFace label CSV not found{hint}; expected fairface_label_val.csv or fairface_label_train.csv with header file,age,gender,race,service_test",
            csv_path.display()
        )));
    }
    let image_root = match &spec.images {
        Some(p) => resolve(data_root, p),
        None => csv_path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    if !image_root.is_dir() {
        return Err(input_error(format!(
            "dataset.images = {}: folder not found; expected the FairFace image folder holding train/ and val/",
            image_root.display()
        )));
    }
    if ctx.labels.is_empty() {
        return Err(input_error(
            "the fairface reader needs labels.values: its targets (age bins, gender, race) are labels, not numbers",
        ));
    }
    let field = if ctx.field.is_empty() {
        infer_field(
            ctx.labels,
            &[("age", &FAIRFACE_AGE_BINS), ("gender", &FAIRFACE_GENDERS), ("race", &FAIRFACE_RACES)],
        ).ok_or_else(|| {
            input_error("labels.field is not set and the labels match none of FairFace's age, gender or race values")
        })?
    } else {
        ctx.field
    };
    if !["age", "gender", "race"].contains(&field) {
        return Err(input_error(format!(
            "labels.field = \"{field}\": the fairface reader's targets are age, gender and race"
        )));
    }

    let shown = csv_path.display().to_string();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&csv_path)
        .map_err(|e| input_error(format!("{shown}: cannot open: {e}")))?;
    let headers = reader
        .headers()
        .map_err(|e| input_error(format!("{shown}:1: cannot read the header: {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let mut required = vec!["file", "age", "gender", "race"];
    if service_test_only {
        required.push("service_test");
    }
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|c| col(c).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(input_error(format!(
            "{shown}:1: missing column(s) {}; expected the FairFace header file,age,gender,race,service_test, found {}",
            missing.join(", "),
            headers.iter().collect::<Vec<_>>().join(",")
        )));
    }
    let (c_file, c_age, c_gender, c_race) = (
        col("file").unwrap(),
        col("age").unwrap(),
        col("gender").unwrap(),
        col("race").unwrap(),
    );
    let c_service = col("service_test");
    let c_target = col(field).unwrap_or(c_age);

    let mut out = Collector::default();
    for (line, record) in csv_rows(&mut reader, &shown, headers.len(), &mut out)? {
        let location = format!("{shown}:{line}");
        let get = |c: usize| record.get(c).unwrap_or("").trim();
        let file = get(c_file);
        if file.is_empty() {
            out.error(
                location.clone(),
                location,
                "malformed row: empty \"file\" column",
            );
            continue;
        }
        let id = format!("fairface:{file}");
        if service_test_only {
            let v = c_service.map(get).unwrap_or("");
            match v.to_ascii_lowercase().as_str() {
                "true" => {}
                "false" => continue,
                _ => {
                    out.error(
                        id,
                        location,
                        format!("service_test is \"{v}\"; expected True or False"),
                    );
                    continue;
                }
            }
        }
        let raw = get(c_target);
        let Some(label) = ctx.labels.canonical(raw) else {
            out.error(id, location, unknown_label(field, raw, ctx.labels));
            continue;
        };
        let image = image_root.join(file);
        if let Err(message) = check_image(&image) {
            out.error(id, location, message);
            continue;
        }
        let mut groups = BTreeMap::new();
        groups.insert("age".to_string(), get(c_age).to_string());
        groups.insert("age_bin".to_string(), get(c_age).to_string());
        groups.insert("gender".to_string(), get(c_gender).to_string());
        groups.insert("race".to_string(), get(c_race).to_string());
        let mut fields = BTreeMap::new();
        if let Some(c) = c_service {
            fields.insert("service_test".to_string(), get(c).to_string());
        }
        fields.insert("file".to_string(), file.to_string());
        let item = Item {
            id,
            images: vec![image],
            question: None,
            options: vec![],
            target: Target::Label(label.to_string()),
            groups,
            cluster: None,
            fields,
        };
        out.item(item, location);
    }
    Ok(out.finish())
}
