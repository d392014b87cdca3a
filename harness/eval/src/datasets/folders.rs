//! One folder per class: `path/<class>/<image>` (images may sit deeper inside a class
//! folder). Class folder names are labels, canonicalised through the task's label set; with
//! no label set they are read as numbers (e.g. one folder per age).

use std::collections::BTreeMap;
use std::path::Path;

use super::common::{
    check_image, default_extensions, has_image_extension, relative_id, resolve, walk_files,
    Collector, Opts,
};
use super::Ctx;
use crate::error::input_error;
use crate::item::{Item, ReadOutcome, Target};
use crate::task::DatasetSpec;

const KEYS: &[&str] = &["extensions"];

pub(super) fn read(spec: &DatasetSpec, ctx: &Ctx, data_root: &Path) -> anyhow::Result<ReadOutcome> {
    let opts = Opts::new("folders", &spec.options, KEYS)?;
    let extensions: Vec<String> = opts
        .list("extensions")?
        .map(|v| {
            v.into_iter()
                .map(|e| e.trim_start_matches('.').to_string())
                .collect()
        })
        .unwrap_or_else(default_extensions);
    let root = resolve(data_root, spec.images.as_deref().unwrap_or(&spec.path));
    if !root.is_dir() {
        return Err(input_error(format!(
            "dataset.path = {}: folder not found; expected one folder per class, each holding images (<class>/<image>.jpg)",
            root.display()
        )));
    }
    let files: Vec<_> = walk_files(&root)
        .map_err(|e| input_error(format!("{}: cannot list folder: {e}", root.display())))?
        .into_iter()
        .filter(|p| has_image_extension(p, &extensions))
        .collect();
    if files.is_empty() {
        return Err(input_error(format!(
            "{}: no images with extension {}; expected one folder per class, each holding images",
            root.display(),
            extensions.join("/")
        )));
    }
    let mut out = Collector::default();
    for path in files {
        let rel = relative_id(&root, &path);
        let id = format!("folders:{rel}");
        let location = path.display().to_string();
        let Some((class, _)) = rel.split_once('/') else {
            out.error(
                id,
                location,
                "image is not inside a class folder; expected <class>/<image>",
            );
            continue;
        };
        let target = if ctx.labels.is_empty() {
            match class.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Target::Number(v),
                _ => {
                    out.error(
                        id,
                        location,
                        format!("class folder \"{class}\" is not a number (the task has no labels, so targets are numeric)"),
                    );
                    continue;
                }
            }
        } else {
            match ctx.labels.canonical(class) {
                Some(l) => Target::Label(l.to_string()),
                None => {
                    out.error(
                        id,
                        location,
                        format!(
                            "class folder \"{class}\" is not a label; expected one of: {}",
                            ctx.labels.values().join(", ")
                        ),
                    );
                    continue;
                }
            }
        };
        if let Err(message) = check_image(&path) {
            out.error(id, location, message);
            continue;
        }
        let mut fields = BTreeMap::new();
        fields.insert("class_folder".to_string(), class.to_string());
        let item = Item {
            id,
            images: vec![path],
            question: None,
            options: vec![],
            target,
            groups: BTreeMap::new(),
            cluster: None,
            fields,
        };
        out.item(item, location);
    }
    Ok(out.finish())
}
