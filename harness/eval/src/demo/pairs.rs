//! Verification pairs of the synthetic faces, in the two layouts the pair readers take, so
//! that the demo runs the shipped verification tasks (`docs/verification.md`).
//!
//! Every identity has up to [`synth::IMAGES_PER_IDENTITY`] images. Its matched pairs are its
//! images 1 and 2, and 3 and 4; each matched pair is balanced by one mismatched pair with the
//! next identity of the same race (RFW pairs within a race too). The images are linked (or
//! copied, where links are not possible) under the names the readers expect:
//!
//! - `lfw/pairs.txt` with `lfw/<identity>/<identity>_<nnnn>.png` (LFW's `pairs.txt`: one
//!   fold per ten matched pairs, at most ten folds);
//! - `rfw/txts/<race>_pairs.txt` with `rfw/data/<race>/<identity>/<identity>_<nnnn>.png`.
//!
//! The synthetic race is a random label (`synth`), so per-race rates only exercise the
//! pipeline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::synth::{self, SynthRow};

/// Where the pair lists went.
#[derive(Debug, Clone)]
pub struct PairLayout {
    /// `lfw/pairs.txt`.
    pub lfw_list: PathBuf,
    /// `lfw/`, the folder of one subfolder per identity.
    pub lfw_images: PathBuf,
    /// `rfw/txts/`.
    pub rfw_lists: PathBuf,
    /// `rfw/data/`.
    pub rfw_images: PathBuf,
    /// The races with a list, in order.
    pub races: Vec<String>,
}

/// One pair: `(identity, image number)` twice.
type Pair = ((String, usize), (String, usize));

fn link_or_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("{}: cannot copy to {}", from.display(), to.display()))?;
    }
    Ok(())
}

fn line((a, b): &Pair) -> String {
    if a.0 == b.0 {
        format!("{}\t{}\t{}", a.0, a.1, b.1)
    } else {
        format!("{}\t{}\t{}\t{}", a.0, a.1, b.0, b.1)
    }
}

/// Write both layouts under `out` for the faces of `rows` (images below `root`); `None` when
/// no matched or no mismatched pair can be made (too few faces).
pub fn write(out: &Path, root: &Path, rows: &[SynthRow]) -> anyhow::Result<Option<PairLayout>> {
    // Identities in order, with their race and image paths (numbered from 1).
    let mut identities: BTreeMap<usize, (String, Vec<PathBuf>)> = BTreeMap::new();
    for row in rows {
        let e = identities
            .entry(row.spec.identity)
            .or_insert_with(|| (synth::RACES[row.spec.race].to_string(), vec![]));
        e.1.push(root.join(&row.image));
    }
    let name = |id: usize| format!("id_{id:04}");
    let mut by_race: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (id, (race, _)) in &identities {
        by_race.entry(race.clone()).or_default().push(*id);
    }
    let mut matched: BTreeMap<String, Vec<Pair>> = BTreeMap::new();
    let mut mismatched: BTreeMap<String, Vec<Pair>> = BTreeMap::new();
    for (race, ids) in &by_race {
        for (k, id) in ids.iter().enumerate() {
            let images = identities[id].1.len();
            let other = ids[(k + 1) % ids.len()];
            for first in [1, 3] {
                if first + 1 > images {
                    continue;
                }
                matched
                    .entry(race.clone())
                    .or_default()
                    .push(((name(*id), first), (name(*id), first + 1)));
                // A race with one identity has no mismatched pair within it.
                if other != *id {
                    let other_image = (first + k) % identities[&other].1.len() + 1;
                    mismatched
                        .entry(race.clone())
                        .or_default()
                        .push(((name(*id), first), (name(other), other_image)));
                }
            }
        }
    }
    let n_matched: usize = matched.values().map(Vec::len).sum();
    let n_mismatched: usize = mismatched.values().map(Vec::len).sum();
    if n_matched == 0 || n_mismatched == 0 {
        return Ok(None);
    }
    let lfw = out.join("lfw");
    let rfw = out.join("rfw");
    for (id, (race, images)) in &identities {
        for (i, from) in images.iter().enumerate() {
            let file = format!("{}_{:04}.png", name(*id), i + 1);
            link_or_copy(from, &lfw.join(name(*id)).join(&file))?;
            link_or_copy(
                from,
                &rfw.join("data").join(race).join(name(*id)).join(&file),
            )?;
        }
    }
    // LFW: folds of `per_fold` matched then `per_fold` mismatched pairs, across races.
    let all_matched: Vec<&Pair> = matched.values().flatten().collect();
    let all_mismatched: Vec<&Pair> = mismatched.values().flatten().collect();
    let per_class = n_matched.min(n_mismatched);
    let folds = per_class.div_ceil(10).clamp(1, 10);
    let per_fold = per_class / folds;
    let mut text = format!("{folds}\t{per_fold}\n");
    for f in 0..folds {
        let take = f * per_fold..(f + 1) * per_fold;
        for p in &all_matched[take.clone()] {
            let _ = writeln!(text, "{}", line(p));
        }
        for p in &all_mismatched[take] {
            let _ = writeln!(text, "{}", line(p));
        }
    }
    let lfw_list = lfw.join("pairs.txt");
    std::fs::write(&lfw_list, text)
        .with_context(|| format!("{}: cannot write", lfw_list.display()))?;
    // RFW: one list per race, matched then mismatched, no header.
    let txts = rfw.join("txts");
    std::fs::create_dir_all(&txts).with_context(|| format!("{}: cannot create", txts.display()))?;
    let mut races = vec![];
    for (race, pairs) in &matched {
        let mut text = String::new();
        for p in pairs
            .iter()
            .chain(mismatched.get(race).into_iter().flatten())
        {
            let _ = writeln!(text, "{}", line(p));
        }
        let list = txts.join(format!("{race}_pairs.txt"));
        std::fs::write(&list, text).with_context(|| format!("{}: cannot write", list.display()))?;
        races.push(race.clone());
    }
    Ok(Some(PairLayout {
        lfw_list,
        lfw_images: lfw,
        rfw_lists: txts,
        rfw_images: rfw.join("data"),
        races,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Target;

    #[test]
    fn demo_pairs_read_back_through_the_shipped_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let data = synth::generate(&data_dir, 40, 7).unwrap();
        let layout = write(&dir.path().join("pairs"), &data_dir, &data.rows)
            .unwrap()
            .expect("40 faces make pairs");
        // The header's folds × pairs per class × 2 is the number of pair lines.
        let lfw = std::fs::read_to_string(&layout.lfw_list).unwrap();
        let counts: Vec<usize> = lfw
            .lines()
            .next()
            .unwrap()
            .split('\t')
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(2 * counts[0] * counts[1], lfw.lines().count() - 1, "{lfw}");
        for name in ["verification-lfw", "verification-rfw"] {
            let task = crate::task::resolve(name, None).unwrap();
            let unused = Path::new("unused");
            let demo = super::super::runner::retarget(&task, unused, unused, Some(&layout))
                .expect("verification tasks run in the demo");
            let read = crate::datasets::read_task(&demo, dir.path()).unwrap();
            assert!(read.errors.is_empty(), "{name}: {:#?}", read.errors);
            let genuine = read
                .items
                .iter()
                .filter(|i| i.target == Target::Label("yes".into()))
                .count();
            assert!(genuine > 0 && genuine < read.items.len(), "{name}");
            for item in &read.items {
                assert_eq!(item.images.len(), 2);
                assert!(item.images.iter().all(|p| p.is_file()), "{item:?}");
            }
            if name == "verification-rfw" {
                assert!(read.items.iter().all(|i| i.groups.contains_key("race")));
            }
        }
        // Too few faces for a mismatched pair: no pairs, and the tasks are skipped.
        let one = synth::generate(&dir.path().join("one"), 4, 7).unwrap();
        assert!(
            write(&dir.path().join("p1"), &dir.path().join("one"), &one.rows)
                .unwrap()
                .is_none()
        );
    }
}
