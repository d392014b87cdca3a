//! Offline resolution of `hf://Org/Name[@rev]` model references to a folder in the local
//! Hugging Face cache. Never touches the network.
//!
//! The cache root is `$HF_HUB_CACHE`, else `$HUGGINGFACE_HUB_CACHE` (older name), else
//! `$HF_HOME/hub`, else `~/.cache/huggingface/hub` — the order `huggingface_hub` uses. A repo
//! lives in `models--Org--Name/`; `refs/<branch>` holds a commit hash and
//! `snapshots/<commit>/` the files. `rev` defaults to `main` and may be a branch or tag
//! (looked up in `refs/`) or a commit hash (a snapshot folder name, or a unique prefix of one).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A parsed `hf://Org/Name[@rev]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    pub repo: String,
    pub revision: Option<String>,
}

impl HubRef {
    /// Parses `hf://Org/Name[@rev]`; `None` when `s` does not start with `hf://`.
    pub fn parse(s: &str) -> Option<Result<Self>> {
        let rest = s.strip_prefix("hf://")?;
        Some(Self::parse_body(s, rest))
    }

    fn parse_body(full: &str, rest: &str) -> Result<Self> {
        let (repo, revision) = match rest.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, Some(rev.to_string())),
            Some(_) => bail!("model reference {full:?}: empty revision after '@'"),
            None => (rest, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let ok_part = |p: &str| !p.is_empty() && p != "." && p != ".." && !p.contains(['\\', ':']);
        if parts.len() != 2 || !parts.iter().all(|p| ok_part(p)) {
            bail!("model reference {full:?}: expected hf://Org/Name[@revision]");
        }
        if let Some(rev) = &revision {
            if rev.contains(['\\']) || rev.split('/').any(|p| p.is_empty() || p == "..") {
                bail!("model reference {full:?}: invalid revision {rev:?}");
            }
        }
        Ok(Self {
            repo: repo.to_string(),
            revision,
        })
    }

    /// `models--Org--Name`.
    pub fn cache_folder_name(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }
}

/// The hub cache root from the environment, following huggingface_hub's precedence.
pub fn cache_root() -> Result<PathBuf> {
    cache_root_from(|k| std::env::var_os(k).filter(|v| !v.is_empty()))
}

fn cache_root_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<PathBuf> {
    if let Some(p) = env("HF_HUB_CACHE").or_else(|| env("HUGGINGFACE_HUB_CACHE")) {
        return Ok(PathBuf::from(p));
    }
    if let Some(home) = env("HF_HOME") {
        return Ok(PathBuf::from(home).join("hub"));
    }
    if let Some(xdg) = env("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(xdg).join("huggingface").join("hub"));
    }
    match env("HOME") {
        Some(h) => Ok(PathBuf::from(h)
            .join(".cache")
            .join("huggingface")
            .join("hub")),
        None => bail!("cannot locate the Hugging Face cache: set HF_HUB_CACHE or HF_HOME"),
    }
}

/// Resolves a model reference: `hf://...` through the local cache, anything else as a path.
pub fn resolve_model_path(reference: &str) -> Result<PathBuf> {
    match HubRef::parse(reference) {
        Some(r) => resolve_in(&r?, &cache_root()?),
        None => Ok(PathBuf::from(reference)),
    }
}

/// Resolves `r` inside the cache folder `root`.
pub fn resolve_in(r: &HubRef, root: &Path) -> Result<PathBuf> {
    let repo_dir = root.join(r.cache_folder_name());
    let rev = r.revision.as_deref().unwrap_or("main");
    let download_hint = || {
        format!(
            "download it first (network needed, outside faceval), e.g. `huggingface-cli download {}{}` \
             or `hf download {}{}`, or pass the model folder path instead",
            r.repo,
            r.revision.as_ref().map(|v| format!(" --revision {v}")).unwrap_or_default(),
            r.repo,
            r.revision.as_ref().map(|v| format!(" --revision {v}")).unwrap_or_default(),
        )
    };
    if !repo_dir.is_dir() {
        bail!(
            "hf://{} is not in the local Hugging Face cache ({} does not exist); {}",
            r.repo,
            repo_dir.display(),
            download_hint()
        );
    }
    let snapshots = repo_dir.join("snapshots");
    let ref_file = repo_dir.join("refs").join(rev);
    let commit = if ref_file.is_file() {
        let c = std::fs::read_to_string(&ref_file)
            .with_context(|| format!("cannot read {}", ref_file.display()))?;
        c.trim().to_string()
    } else if snapshots.join(rev).is_dir() {
        rev.to_string()
    } else {
        // A unique prefix of a commit hash.
        let mut matches = vec![];
        if rev.len() >= 7 && rev.chars().all(|c| c.is_ascii_hexdigit()) {
            if let Ok(rd) = std::fs::read_dir(&snapshots) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if name.starts_with(rev) {
                        matches.push(name);
                    }
                }
            }
        }
        match matches.len() {
            1 => matches.remove(0),
            0 => bail!(
                "hf://{}@{rev}: revision not in the local cache (no {} and no snapshot {rev}); {}",
                r.repo,
                ref_file.display(),
                download_hint()
            ),
            _ => bail!(
                "hf://{}@{rev}: ambiguous commit prefix ({matches:?})",
                r.repo
            ),
        }
    };
    let dir = snapshots.join(&commit);
    if !dir.is_dir() {
        bail!(
            "hf://{}@{rev}: the cache names commit {commit} but {} is missing (incomplete \
             download); {}",
            r.repo,
            dir.display(),
            download_hint()
        );
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn parses_references() {
        assert_eq!(
            HubRef::parse("hf://Idiap/FaceLLM-1B").unwrap().unwrap(),
            HubRef {
                repo: "Idiap/FaceLLM-1B".into(),
                revision: None
            }
        );
        let r = HubRef::parse("hf://OpenGVLab/InternVL3-1B-hf@v1.0")
            .unwrap()
            .unwrap();
        assert_eq!(r.revision.as_deref(), Some("v1.0"));
        assert_eq!(r.cache_folder_name(), "models--OpenGVLab--InternVL3-1B-hf");
        assert!(HubRef::parse("/some/path").is_none());
        assert!(HubRef::parse("hf://justname").unwrap().is_err());
        assert!(HubRef::parse("hf://a/../b").unwrap().is_err());
        assert!(HubRef::parse("hf://a/b@").unwrap().is_err());
    }

    #[test]
    fn cache_root_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(a, _)| *a == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            cache_root_from(env(&[("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h")])).unwrap(),
            PathBuf::from("/c")
        );
        assert_eq!(
            cache_root_from(env(&[("HF_HOME", "/h"), ("HOME", "/home/u")])).unwrap(),
            PathBuf::from("/h/hub")
        );
        assert_eq!(
            cache_root_from(env(&[("HOME", "/home/u")])).unwrap(),
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
    }

    #[test]
    fn resolves_refs_commits_and_explains_absence() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--Org--Name");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), format!("{commit}\n")).unwrap();
        let r = |s: &str| HubRef::parse(s).unwrap().unwrap();
        let want = repo.join("snapshots").join(commit);
        assert_eq!(resolve_in(&r("hf://Org/Name"), tmp.path()).unwrap(), want);
        assert_eq!(
            resolve_in(&r(&format!("hf://Org/Name@{commit}")), tmp.path()).unwrap(),
            want
        );
        assert_eq!(
            resolve_in(&r("hf://Org/Name@0123456"), tmp.path()).unwrap(),
            want
        );
        let err = resolve_in(&r("hf://Org/Other"), tmp.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("huggingface-cli download Org/Other"), "{err}");
        let err = resolve_in(&r("hf://Org/Name@dev"), tmp.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--revision dev"), "{err}");
    }
}
