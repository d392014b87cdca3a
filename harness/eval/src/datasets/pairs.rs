//! Face verification pair lists (`docs/verification.md`).
//!
//! - **`lfw_pairs`**: LFW's `pairs.txt` (View 2), which the CALFW, CPLFW, CFP and AgeDB exports
//!   follow too. The first line gives the number of folds and the pairs per class per fold
//!   (`10 300`; `pairsDevTest.txt` gives only the count, one fold). Then, per fold, that many
//!   matched lines `name n1 n2` followed by as many mismatched lines `name1 n1 name2 n2`.
//!   Image `n` of `name` is `<images>/<name>/<name>_<nnnn>.jpg` (four digits).
//! - **`rfw_pairs`**: RFW's `<race>_pairs.txt`, one per race (`African`, `Asian`, `Caucasian`,
//!   `Indian`), with the same two line shapes, no header, and folds of 300 + 300 lines.
//!   Image `n` of `id` is `<images>/<race>/<id>/<id>_<nnnn>.jpg`; the race is the item's
//!   `race` group.
//!
//! Fields are separated by tabs in the distributed files; any whitespace is accepted. The
//! task's two labels are the answers: the first for a matched pair ("same"), the second for a
//! mismatched one. Each item carries its two images, `fold`, `pair` (`matched` or
//! `mismatched`) and the two identities, and its cluster is the first identity's, so that
//! bootstraps resample identities.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::common::{check_image, resolve, Collector, Opts};
use super::Ctx;
use crate::error::input_error;
use crate::item::{Item, ReadOutcome, Target};
use crate::task::DatasetSpec;

const KEYS: &[&str] = &["extension"];
const RFW_KEYS: &[&str] = &["extension", "races"];
/// RFW's four subsets.
pub const RFW_RACES: [&str; 4] = ["African", "Asian", "Caucasian", "Indian"];
/// Pairs per class per fold in RFW's lists (they have no header): 300 matched, then 300
/// mismatched.
const RFW_PER_FOLD: usize = 300;

/// One line of a pair list, parsed.
struct PairLine<'a> {
    first: (&'a str, u32),
    second: (&'a str, u32),
    matched: bool,
}

/// `name n1 n2` (matched) or `name1 n1 name2 n2` (mismatched); `Err` says what is wrong.
fn parse_line(line: &str) -> Result<PairLine<'_>, String> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let number = |t: &str| -> Result<u32, String> {
        t.parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("\"{t}\" is not an image number (1, 2, ...)"))
    };
    match tokens[..] {
        [name, a, b] => Ok(PairLine {
            first: (name, number(a)?),
            second: (name, number(b)?),
            matched: true,
        }),
        [name1, a, name2, b] => Ok(PairLine {
            first: (name1, number(a)?),
            second: (name2, number(b)?),
            matched: false,
        }),
        _ => Err(format!(
            "expected \"name n1 n2\" (a matched pair) or \"name1 n1 name2 n2\" (a mismatched pair), found {} fields: \"{line}\"",
            tokens.len()
        )),
    }
}

/// The two answers: `(same, different)`, from the task's two labels.
fn answers(ctx: &Ctx, reader: &str) -> anyhow::Result<(String, String)> {
    match ctx.labels.values() {
        [same, different] => Ok((same.clone(), different.clone())),
        other => Err(input_error(format!(
            "the {reader} reader needs exactly two labels.values, the answer for the same person first (e.g. [\"same\", \"different\"] or [\"yes\", \"no\"]); found {}",
            other.len()
        ))),
    }
}

/// What the two readers share once a list is open: where images are, how they are named.
struct Layout<'a> {
    reader: &'static str,
    list: String,
    image_root: PathBuf,
    extension: &'a str,
    same: &'a str,
    different: &'a str,
    /// `race` for RFW, none for LFW-style lists.
    race: Option<&'a str>,
}

impl Layout<'_> {
    fn image(&self, name: &str, n: u32) -> PathBuf {
        self.image_root
            .join(name)
            .join(format!("{name}_{n:04}.{}", self.extension))
    }

    /// Turn the lines of one list into items. Folds are `per_fold` matched lines then as
    /// many mismatched ones; with `check_order` a line of the other kind is an item error
    /// (LFW's header fixes the order; RFW's lists are taken by their line shapes).
    fn read_lines(
        &self,
        lines: &[(usize, &str)],
        per_fold: usize,
        check_order: bool,
        out: &mut Collector,
    ) {
        for (k, &(line_no, line)) in lines.iter().enumerate() {
            let location = format!("{}:{line_no}", self.list);
            let fold = k / (2 * per_fold) + 1;
            let should_match = k % (2 * per_fold) < per_fold;
            let pair = match parse_line(line) {
                Ok(p) => p,
                Err(message) => {
                    out.error(location.clone(), location, message);
                    continue;
                }
            };
            let key = |(name, n): (&str, u32)| format!("{name}_{n:04}");
            let id = match self.race {
                Some(race) => format!(
                    "{}:{race}:{}:{}",
                    self.reader,
                    key(pair.first),
                    key(pair.second)
                ),
                None => format!("{}:{}:{}", self.reader, key(pair.first), key(pair.second)),
            };
            if check_order && pair.matched != should_match {
                let (want, shape) = if should_match {
                    ("matched", "name n1 n2")
                } else {
                    ("mismatched", "name1 n1 name2 n2")
                };
                out.error(
                    id,
                    location,
                    format!(
                        "fold {fold} should have a {want} pair here (\"{shape}\"): each fold lists {per_fold} matched pairs, then {per_fold} mismatched ones"
                    ),
                );
                continue;
            }
            if !pair.matched && pair.first.0 == pair.second.0 {
                out.error(
                    id,
                    location,
                    format!(
                        "a mismatched pair names one person twice (\"{}\")",
                        pair.first.0
                    ),
                );
                continue;
            }
            let images = [
                self.image(pair.first.0, pair.first.1),
                self.image(pair.second.0, pair.second.1),
            ];
            if let Some(message) = images.iter().find_map(|p| check_image(p).err()) {
                out.error(id, location, message);
                continue;
            }
            let mut fields = BTreeMap::new();
            fields.insert("fold".to_string(), fold.to_string());
            let kind = if pair.matched {
                "matched"
            } else {
                "mismatched"
            };
            fields.insert("pair".to_string(), kind.to_string());
            fields.insert("identity_1".to_string(), pair.first.0.to_string());
            fields.insert("identity_2".to_string(), pair.second.0.to_string());
            let mut groups = BTreeMap::new();
            if let Some(race) = self.race {
                groups.insert("race".to_string(), race.to_string());
            }
            let cluster = match self.race {
                Some(race) => format!("{race}/{}", pair.first.0),
                None => pair.first.0.to_string(),
            };
            let answer = if pair.matched {
                self.same
            } else {
                self.different
            };
            let item = Item {
                id,
                images: images.to_vec(),
                question: None,
                options: vec![],
                target: Target::Label(answer.to_string()),
                groups,
                cluster: Some(cluster),
                fields,
            };
            out.item(item, location);
        }
    }
}

/// The non-blank lines of a list with their 1-based line numbers.
fn read_list(path: &Path) -> anyhow::Result<(String, Vec<(usize, String)>)> {
    let shown = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| input_error(format!("{shown}: cannot read: {e}")))?;
    let text = String::from_utf8_lossy(&bytes);
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .collect();
    Ok((shown, lines))
}

fn extension(opts: &Opts) -> anyhow::Result<String> {
    let ext = opts.string("extension")?.unwrap_or_else(|| "jpg".into());
    let ext = ext.trim_start_matches('.').to_string();
    if ext.is_empty() || ext.contains(['/', '\\']) {
        return Err(input_error(format!(
            "dataset.options.extension = \"{ext}\": give a file extension such as \"jpg\" or \"png\""
        )));
    }
    Ok(ext)
}

/// LFW-style `pairs.txt`.
pub(super) fn read_lfw(
    spec: &DatasetSpec,
    ctx: &Ctx,
    data_root: &Path,
) -> anyhow::Result<ReadOutcome> {
    let opts = Opts::new("lfw_pairs", &spec.options, KEYS)?;
    let extension = extension(&opts)?;
    let (same, different) = answers(ctx, "lfw_pairs")?;
    let given = resolve(data_root, &spec.path);
    let list = if given.is_dir() {
        given.join("pairs.txt")
    } else {
        given.clone()
    };
    if !list.is_file() {
        return Err(input_error(format!(
            "dataset.path = {}: pair list not found; expected LFW's pairs.txt (or a folder holding it)",
            given.display()
        )));
    }
    let image_root = match &spec.images {
        Some(p) => resolve(data_root, p),
        None => list.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    if !image_root.is_dir() {
        return Err(input_error(format!(
            "dataset.images = {}: folder not found; expected the folder with one subfolder per person (LFW's lfw/ or lfw-deepfunneled/)",
            image_root.display()
        )));
    }
    let (shown, lines) = read_list(&list)?;
    let Some(((header_line, header), pairs)) = lines.split_first() else {
        return Err(input_error(format!(
            "{shown}: empty; expected a first line \"<folds> <pairs per class>\" (LFW: \"10 300\")"
        )));
    };
    let counts: Vec<usize> = header
        .split_whitespace()
        .map(str::parse::<usize>)
        .collect::<Result<_, _>>()
        .map_err(|_| {
            input_error(format!(
                "{shown}:{header_line}: \"{header}\" is not a header \"<folds> <pairs per class>\" (LFW: \"10 300\")"
            ))
        })?;
    let (folds, per_fold) = match counts[..] {
        [folds, per_fold] if folds > 0 && per_fold > 0 => (folds, per_fold),
        [per_fold] if per_fold > 0 => (1, per_fold),
        _ => {
            return Err(input_error(format!(
                "{shown}:{header_line}: \"{header}\" is not a header \"<folds> <pairs per class>\" with positive numbers (LFW: \"10 300\")"
            )))
        }
    };
    if pairs.len() != 2 * folds * per_fold {
        return Err(input_error(format!(
            "{shown}: the header (line {header_line}) promises {folds} folds of {per_fold} matched and {per_fold} mismatched pairs, {} lines, but {} pair lines follow",
            2 * folds * per_fold,
            pairs.len()
        )));
    }
    let layout = Layout {
        reader: "lfw",
        list: shown,
        image_root,
        extension: &extension,
        same: &same,
        different: &different,
        race: None,
    };
    let lines: Vec<(usize, &str)> = pairs.iter().map(|(n, l)| (*n, l.as_str())).collect();
    let mut out = Collector::default();
    layout.read_lines(&lines, per_fold, true, &mut out);
    Ok(out.finish())
}

/// RFW's `<race>_pairs.txt` lists.
pub(super) fn read_rfw(
    spec: &DatasetSpec,
    ctx: &Ctx,
    data_root: &Path,
) -> anyhow::Result<ReadOutcome> {
    let opts = Opts::new("rfw_pairs", &spec.options, RFW_KEYS)?;
    let extension = extension(&opts)?;
    let (same, different) = answers(ctx, "rfw_pairs")?;
    let races = opts
        .list("races")?
        .unwrap_or_else(|| RFW_RACES.iter().map(|s| s.to_string()).collect());
    if races.is_empty() {
        return Err(input_error(
            "dataset.options.races is empty; list some of African, Asian, Caucasian, Indian, or leave it out for all four",
        ));
    }
    let given = resolve(data_root, &spec.path);
    // A folder of lists (RFW's txts/, flat or one subfolder per race), or one list.
    let lists: Vec<(String, PathBuf)> = if given.is_file() {
        let name = given
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix("_pairs.txt"))
            .ok_or_else(|| {
                input_error(format!(
                    "dataset.path = {}: an RFW list is named <race>_pairs.txt (African_pairs.txt, ...)",
                    given.display()
                ))
            })?;
        vec![(name.to_string(), given.clone())]
    } else if given.is_dir() {
        let mut found = vec![];
        for race in &races {
            let file = format!("{race}_pairs.txt");
            let candidates = [given.join(&file), given.join(race).join(&file)];
            let Some(p) = candidates.iter().find(|p| p.is_file()) else {
                return Err(input_error(format!(
                    "dataset.path = {}: {file} not found there or in {race}/; expected RFW's txts folder (dataset.options.races picks which races to read)",
                    given.display()
                )));
            };
            found.push((race.clone(), p.clone()));
        }
        found
    } else {
        return Err(input_error(format!(
            "dataset.path = {}: not found; expected RFW's txts folder or one <race>_pairs.txt",
            given.display()
        )));
    };
    let images = match &spec.images {
        Some(p) => resolve(data_root, p),
        None => given
            .parent()
            .map(|p| p.join("data"))
            .filter(|p| p.is_dir())
            .unwrap_or_else(|| data_root.to_path_buf()),
    };
    let mut out = Collector::default();
    for (race, list) in &lists {
        let image_root = images.join(race);
        if !image_root.is_dir() {
            return Err(input_error(format!(
                "dataset.images = {}: no {race}/ folder there; expected RFW's data folder with one subfolder per race",
                images.display()
            )));
        }
        let (shown, lines) = read_list(list)?;
        let layout = Layout {
            reader: "rfw",
            list: shown,
            image_root,
            extension: &extension,
            same: &same,
            different: &different,
            race: Some(race.as_str()),
        };
        let lines: Vec<(usize, &str)> = lines.iter().map(|(n, l)| (*n, l.as_str())).collect();
        layout.read_lines(&lines, RFW_PER_FOLD, false, &mut out);
    }
    Ok(out.finish())
}
