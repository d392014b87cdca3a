//! UTKFace: a folder (searched recursively) of images named
//! `[age]_[gender]_[race]_[datetime].jpg` (the aligned crops add `.chip.jpg`). Gender 0 is
//! male, 1 female; race 0-4 is White, Black, Asian, Indian, Others.

use std::collections::BTreeMap;
use std::path::Path;

use super::bins::{fairface_age_bin, AgeBins};
use super::common::{
    default_extensions, has_image_extension, infer_field, relative_id, resolve, unknown_label,
    walk_files, Collector, Opts,
};
use super::Ctx;
use crate::error::input_error;
use crate::item::{Item, ReadOutcome, Target};
use crate::task::DatasetSpec;

const KEYS: &[&str] = &[];

pub const GENDERS: [&str; 2] = ["Male", "Female"];
pub const RACES: [&str; 5] = ["White", "Black", "Asian", "Indian", "Others"];

/// The labels a UTKFace file name encodes.
#[derive(Debug, Clone, PartialEq)]
pub struct UtkName {
    pub age: u32,
    pub gender: &'static str,
    pub race: &'static str,
}

/// Parse `[age]_[gender]_[race]_[datetime]...`; the error says which part is wrong.
pub fn parse_name(name: &str) -> Result<UtkName, String> {
    let base = name.split('.').next().unwrap_or("");
    let parts: Vec<&str> = base.split('_').collect();
    if parts.len() != 4 {
        return Err(format!(
            "file name \"{name}\" has {} '_'-separated part(s); expected [age]_[gender]_[race]_[datetime]",
            parts.len()
        ));
    }
    let age: u32 = parts[0].parse().ok().filter(|a| *a <= 130).ok_or_else(|| {
        format!(
            "file name \"{name}\": age \"{}\" is not a whole number of years 0-130",
            parts[0]
        )
    })?;
    let gender = match parts[1] {
        "0" => GENDERS[0],
        "1" => GENDERS[1],
        g => {
            return Err(format!(
                "file name \"{name}\": gender \"{g}\" is not 0 (male) or 1 (female)"
            ))
        }
    };
    let race = parts[2]
        .parse::<usize>()
        .ok()
        .and_then(|r| RACES.get(r).copied())
        .ok_or_else(|| format!("file name \"{name}\": race \"{}\" is not 0-4 (White, Black, Asian, Indian, Others)", parts[2]))?;
    if parts[3].is_empty() {
        return Err(format!("file name \"{name}\": the datetime part is empty"));
    }
    Ok(UtkName { age, gender, race })
}

enum Mode {
    Number,
    Bins(AgeBins),
    Gender,
    Race,
}

pub(super) fn read(spec: &DatasetSpec, ctx: &Ctx, data_root: &Path) -> anyhow::Result<ReadOutcome> {
    Opts::new("utkface", &spec.options, KEYS)?;
    let root = resolve(data_root, spec.images.as_deref().unwrap_or(&spec.path));
    if !root.is_dir() {
        return Err(input_error(format!(
            "dataset.path = {}: folder not found; expected a UTKFace folder of images named [age]_[gender]_[race]_[datetime].jpg",
            root.display()
        )));
    }
    let field = if !ctx.field.is_empty() {
        ctx.field
    } else if ctx.labels.is_empty() {
        "age"
    } else {
        match infer_field(ctx.labels, &[("gender", &GENDERS), ("race", &RACES)]) {
            Some(f) => f,
            None if AgeBins::from_labels(ctx.labels.values()).is_ok() => "age",
            None => {
                return Err(input_error(
                    "labels.field is not set and the labels are neither UTKFace genders, races nor age bins",
                ))
            }
        }
    };
    let mode = match field {
        "age" if ctx.labels.is_empty() => Mode::Number,
        "age" => Mode::Bins(AgeBins::from_labels(ctx.labels.values()).map_err(|e| {
            input_error(format!(
                "labels.values: {e}; UTKFace ages map onto bin labels"
            ))
        })?),
        "gender" | "race" if ctx.labels.is_empty() => {
            return Err(input_error(format!(
                "labels.field = \"{field}\" needs labels.values"
            )))
        }
        "gender" => Mode::Gender,
        "race" => Mode::Race,
        other => {
            return Err(input_error(format!(
                "labels.field = \"{other}\": the utkface reader's targets are age, gender and race"
            )))
        }
    };
    let extensions = default_extensions();
    let files: Vec<_> = walk_files(&root)
        .map_err(|e| input_error(format!("{}: cannot list folder: {e}", root.display())))?
        .into_iter()
        .filter(|p| has_image_extension(p, &extensions))
        .collect();
    if files.is_empty() {
        return Err(input_error(format!(
            "{}: no images; expected UTKFace files named [age]_[gender]_[race]_[datetime].jpg(.chip.jpg)",
            root.display()
        )));
    }
    let mut out = Collector::default();
    for path in files {
        let id = format!("utkface:{}", relative_id(&root, &path));
        let location = path.display().to_string();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = match parse_name(&name) {
            Ok(p) => p,
            Err(message) => {
                out.error(id, location, message);
                continue;
            }
        };
        let target = match &mode {
            Mode::Number => Target::Number(parsed.age as f64),
            Mode::Bins(bins) => match bins.index_of(parsed.age as f64) {
                Some(i) => Target::Label(ctx.labels.values()[i].clone()),
                None => {
                    out.error(
                        id,
                        location,
                        format!("age {} falls in none of the label bins", parsed.age),
                    );
                    continue;
                }
            },
            Mode::Gender | Mode::Race => {
                let (what, raw) = if matches!(mode, Mode::Gender) {
                    ("gender", parsed.gender)
                } else {
                    ("race", parsed.race)
                };
                match ctx.labels.canonical(raw) {
                    Some(l) => Target::Label(l.to_string()),
                    None => {
                        out.error(id, location, unknown_label(what, raw, ctx.labels));
                        continue;
                    }
                }
            }
        };
        let mut groups = BTreeMap::new();
        groups.insert("gender".to_string(), parsed.gender.to_string());
        groups.insert("race".to_string(), parsed.race.to_string());
        groups.insert(
            "age_bin".to_string(),
            fairface_age_bin(parsed.age).to_string(),
        );
        let mut fields = BTreeMap::new();
        fields.insert("age".to_string(), parsed.age.to_string());
        let item = Item {
            id,
            images: vec![path],
            question: None,
            options: vec![],
            target,
            groups,
            cluster: None,
            fields,
        };
        out.item(item, location);
    }
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = parse_name("26_1_2_20170116174525125.jpg.chip.jpg").unwrap();
        assert_eq!(
            n,
            UtkName {
                age: 26,
                gender: "Female",
                race: "Asian"
            }
        );
        assert!(parse_name("61_1_20170109142408075.jpg.chip.jpg")
            .unwrap_err()
            .contains("3 '_'"));
        assert!(parse_name("30_2_0_x.jpg").unwrap_err().contains("gender"));
        assert!(parse_name("30_0_5_x.jpg").unwrap_err().contains("race"));
        assert!(parse_name("abc_0_1_x.jpg").unwrap_err().contains("age"));
    }
}
