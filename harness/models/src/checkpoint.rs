//! Checkpoint folders shared by every model family: which files make up a folder
//! ([`CheckpointFiles`]), a sanity check of each safetensors header before anything is
//! mapped, the end-of-sequence ids of generation_config.json, and what a run records about a
//! loaded checkpoint ([`CheckpointInfo`]).
//!
//! These were written for InternVL and then used by LLaVA and the zero-shot encoders; they
//! live at crate level so that no family depends on another.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::placement::{device_name, dtype_name};

/// Files that make up a checkpoint folder.
#[derive(Debug, Clone)]
pub struct CheckpointFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Safetensors files (one, or the shards in index order).
    pub weights: Vec<PathBuf>,
    /// `model.safetensors.index.json` when sharded.
    pub index: Option<PathBuf>,
}

impl CheckpointFiles {
    /// Finds config and weights in `dir`. Tells a folder that is not a checkpoint (missing
    /// files) apart from a corrupt one (files present but unreadable) in its message.
    pub fn locate(dir: &Path) -> Result<Self> {
        if !dir.exists() {
            bail!("model folder {} does not exist", dir.display());
        }
        if !dir.is_dir() {
            bail!("model path {} is not a folder", dir.display());
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            bail!(
                "{} is not a model checkpoint: config.json is missing",
                dir.display()
            );
        }
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        if index.is_file() {
            let weights = read_index(&index)?;
            Ok(Self {
                dir: dir.to_path_buf(),
                config,
                weights,
                index: Some(index),
            })
        } else if single.is_file() {
            Ok(Self {
                dir: dir.to_path_buf(),
                config,
                weights: vec![single],
                index: None,
            })
        } else {
            let has_bin = dir.join("pytorch_model.bin").exists()
                || dir.join("pytorch_model.bin.index.json").exists();
            bail!(
                "{} has no weights: neither model.safetensors nor model.safetensors.index.json{}",
                dir.display(),
                if has_bin {
                    " (only PyTorch .bin weights, which are not supported; convert them to safetensors)"
                } else {
                    ""
                }
            )
        }
    }

    /// sha256 of the index file when sharded, else of the single weights file.
    pub fn weights_sha256(&self) -> Result<String> {
        let path = self.index.as_ref().unwrap_or(&self.weights[0]);
        let mut file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

fn read_index(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index)
        .with_context(|| format!("cannot read {}", index.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("corrupt {}: not valid JSON", index.display()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| anyhow!("corrupt {}: no `weight_map` object", index.display()))?;
    let mut shards = BTreeSet::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            anyhow!(
                "corrupt {}: weight_map entry for `{name}` is not a file name",
                index.display()
            )
        })?;
        shards.insert(file.to_string());
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for shard in shards {
        let p = dir.join(&shard);
        if !p.is_file() {
            bail!(
                "{} lists shard {shard}, which is missing from {}",
                index.display(),
                dir.display()
            );
        }
        out.push(p);
    }
    if out.is_empty() {
        bail!("corrupt {}: `weight_map` is empty", index.display());
    }
    Ok(out)
}

/// Reads the 8-byte header length and JSON header so that a truncated or non-safetensors file
/// fails with "corrupt" and its path rather than a bare deserialisation error.
pub fn check_safetensors_header(path: &Path) -> Result<()> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    let mut n = [0u8; 8];
    if len < 8 || f.read_exact(&mut n).is_err() {
        bail!(
            "corrupt weights file {}: too short for a safetensors header",
            path.display()
        );
    }
    let hlen = u64::from_le_bytes(n);
    if hlen == 0 || hlen > 100_000_000 || 8 + hlen > len {
        bail!(
            "corrupt weights file {}: header length {hlen} does not fit a {len}-byte file \
             (truncated download, or not a safetensors file)",
            path.display()
        );
    }
    let mut header = vec![0u8; hlen as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("corrupt weights file {}: unreadable header", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
        anyhow!(
            "corrupt weights file {}: header is not JSON ({e})",
            path.display()
        )
    })?;
    // Every tensor's data must lie inside the file.
    let data_len = len - 8 - hlen;
    if let Some(obj) = v.as_object() {
        for (name, info) in obj {
            if name == "__metadata__" {
                continue;
            }
            let end = info
                .get("data_offsets")
                .and_then(|o| o.as_array())
                .and_then(|o| o.get(1))
                .and_then(|e| e.as_u64());
            match end {
                Some(end) if end <= data_len => {}
                Some(end) => bail!(
                    "corrupt weights file {}: tensor `{name}` ends at byte {end} of a {data_len}-byte \
                     data section (truncated download?)",
                    path.display()
                ),
                None => bail!(
                    "corrupt weights file {}: tensor `{name}` has no data_offsets",
                    path.display()
                ),
            }
        }
    }
    Ok(())
}

/// Reads a JSON file that may be absent: `Ok(None)` when `path` is not a file, an error naming
/// the file when it cannot be read or parsed. The one JSON reader of the families' loaders.
pub fn read_json_if_present(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    read_json(path).map(Some)
}

/// Reads a JSON file that must exist; errors name the file.
pub fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("corrupt {}: not valid JSON", path.display()))
}

/// `eos_token_id` (one or a list) from generation_config.json, if the file exists.
pub fn generation_config_eos(dir: &Path) -> Result<Vec<u32>> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(vec![]);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("corrupt {}: not valid JSON", path.display()))?;
    let bad = || {
        anyhow!(
            "{}: `eos_token_id` must be an integer or a list of integers",
            path.display()
        )
    };
    match v.get("eos_token_id") {
        None | Some(serde_json::Value::Null) => Ok(vec![]),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|x| x.as_u64().map(|x| x as u32).ok_or_else(bad))
            .collect(),
        Some(x) => Ok(vec![x.as_u64().ok_or_else(bad)? as u32]),
    }
}

/// What a run records about a model loaded from a checkpoint. The weights' sha256 reads every
/// byte of the files, so it is computed on the first call and kept in `sha256`.
pub(crate) struct CheckpointInfo<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub files: &'a CheckpointFiles,
    pub sha256: &'a std::sync::OnceLock<Option<String>>,
    pub device: &'a Device,
    pub dtype: DType,
    pub weight_bytes: u64,
}

impl CheckpointInfo<'_> {
    pub fn model_info(&self) -> crate::ModelInfo {
        crate::ModelInfo {
            name: self.name.to_string(),
            kind: self.kind.to_string(),
            device: device_name(self.device).to_string(),
            dtype: dtype_name(self.dtype).to_string(),
            weights_sha256: self
                .sha256
                .get_or_init(|| self.files.weights_sha256().ok())
                .clone(),
            weight_bytes: self.weight_bytes,
        }
    }
}

/// Longest added token [`load_tokenizer`] accepts, in bytes. The `tokenizers` crate matches
/// added tokens with an Aho-Corasick automaton whose construction takes time quadratic in a
/// self-overlapping token's length (one 70,000-byte run of `a` took over five minutes; found
/// by the fuzzer). Released tokenizers' added tokens are at most a few dozen bytes
/// (`<|reserved_special_token_250|>`, runs of 31 spaces), so this bound refuses only damaged
/// or hostile files.
pub const MAX_ADDED_TOKEN_BYTES: usize = 256;

/// Most added-token bytes in all that [`load_tokenizer`] accepts: the automaton's cost grows
/// with every token, and the largest released lists (some thousands of tokens) stay far below.
pub const MAX_ADDED_TOKENS_TOTAL_BYTES: usize = 1 << 20;

/// Load a `tokenizer.json`; errors (and the `tokenizers` crate's own panics on some malformed
/// files, e.g. a damaged `decoder` section: `.expect("Helper")` in tokenizers 0.22, found by
/// the fuzzer) become an error naming the file. Added tokens are checked against
/// [`MAX_ADDED_TOKEN_BYTES`] and [`MAX_ADDED_TOKENS_TOTAL_BYTES`] before the library sees them.
pub fn load_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read tokenizer {}", path.display()))?;
    check_added_tokens(&bytes)
        .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
    let loaded = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(&bytes));
    match loaded {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(anyhow::anyhow!("cannot load tokenizer {}: {e}", path.display())),
        Err(_) => Err(anyhow::anyhow!(
            "cannot load tokenizer {}: the file is malformed (the tokenizers library gave up on it)",
            path.display()
        )),
    }
}

/// The size limits on `added_tokens` (see [`MAX_ADDED_TOKEN_BYTES`]). Only that field is
/// read; a file that is not JSON, or whose `added_tokens` has another shape, passes here and
/// gets the `tokenizers` crate's own error.
fn check_added_tokens(bytes: &[u8]) -> std::result::Result<(), String> {
    #[derive(serde::Deserialize)]
    struct AddedTokens {
        #[serde(default)]
        added_tokens: Vec<AddedToken>,
    }
    #[derive(serde::Deserialize)]
    struct AddedToken {
        content: String,
        #[serde(default)]
        id: Option<u64>,
    }
    let Ok(file) = serde_json::from_slice::<AddedTokens>(bytes) else {
        return Ok(());
    };
    let mut total = 0usize;
    for (index, token) in file.added_tokens.iter().enumerate() {
        let len = token.content.len();
        if len > MAX_ADDED_TOKEN_BYTES {
            let id = token
                .id
                .map_or_else(|| "no id".to_string(), |id| format!("id {id}"));
            return Err(format!(
                "added_tokens[{index}] ({id}) is {len} bytes long; faceval accepts added tokens \
                 of at most {MAX_ADDED_TOKEN_BYTES} bytes (the tokenizers library takes time \
                 quadratic in their length). Released tokenizers have none this long: the \
                 file is probably damaged; replace it with the checkpoint's original"
            ));
        }
        total += len;
    }
    if total > MAX_ADDED_TOKENS_TOTAL_BYTES {
        return Err(format!(
            "its {} added tokens hold {total} bytes in all; faceval accepts at most \
             {MAX_ADDED_TOKENS_TOTAL_BYTES} (the tokenizers library's matcher grows with \
             every token). The file is probably damaged; replace it with the checkpoint's \
             original",
            file.added_tokens.len()
        ));
    }
    Ok(())
}

/// `Tokenizer::encode` that cannot take the process down: a tokenizer.json that loads but
/// whose tables disagree (a merge or added token missing from the vocabulary) makes the
/// `tokenizers` crate panic while encoding ("no entry found for key", found by the fuzzer);
/// here that is an error like any other encoding error.
pub trait EncodeChecked {
    fn encode_checked(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> std::result::Result<tokenizers::Encoding, String>;
}

impl EncodeChecked for tokenizers::Tokenizer {
    fn encode_checked(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> std::result::Result<tokenizers::Encoding, String> {
        let run = std::panic::AssertUnwindSafe(|| self.encode(text, add_special_tokens));
        match std::panic::catch_unwind(run) {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                Err("the tokenizer's tables are inconsistent (tokenizer.json is malformed)".into())
            }
        }
    }
}

/// Stop tokens of a chat model: the config's eos ids plus the chat turn's end token
/// (`turn_end`, e.g. `<|im_end|>` or `</s>`) when the vocabulary has it; and the token that
/// ends an answer for likelihood scoring (the turn end, else the first eos).
pub fn stop_tokens(
    eos_ids: &[u32],
    tokenizer: &tokenizers::Tokenizer,
    turn_end: &str,
) -> (Vec<u32>, Option<u32>) {
    let mut stop = eos_ids.to_vec();
    let turn_end = tokenizer.token_to_id(turn_end);
    if let Some(id) = turn_end {
        if !stop.contains(&id) {
            stop.push(id);
        }
    }
    let end_of_turn = turn_end.or_else(|| stop.first().copied());
    (stop, end_of_turn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer_with_added(content: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 0, "content": "<s>", "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": true},
                {"id": 3, "content": content, "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": null, "pre_tokenizer": null, "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": {"<s>": 0, "a": 1, "<unk>": 2},
                      "unk_token": "<unk>"}
        }))
        .unwrap()
    }

    #[test]
    fn added_tokens_over_the_bound_are_refused_before_the_library_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let at_bound = "a".repeat(MAX_ADDED_TOKEN_BYTES);
        std::fs::write(&path, tokenizer_with_added(&at_bound)).unwrap();
        let tokenizer = load_tokenizer(&path).unwrap();
        assert_eq!(tokenizer.token_to_id(&at_bound), Some(3));

        std::fs::write(&path, tokenizer_with_added(&"a".repeat(70_000))).unwrap();
        let started = std::time::Instant::now();
        let err = load_tokenizer(&path).unwrap_err().to_string();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{err}"
        );
        assert!(err.contains("tokenizer.json"), "{err}");
        assert!(
            err.contains("added_tokens[1] (id 3) is 70000 bytes long"),
            "{err}"
        );
    }

    #[test]
    fn added_tokens_over_the_total_bound_are_refused() {
        let tokens: Vec<_> = (0..5000)
            .map(|i| serde_json::json!({"id": i, "content": format!("{i:0>250}"), "special": true}))
            .collect();
        let bytes = serde_json::to_vec(&serde_json::json!({ "added_tokens": tokens })).unwrap();
        let err = check_added_tokens(&bytes).unwrap_err();
        assert!(
            err.contains("5000 added tokens hold 1250000 bytes"),
            "{err}"
        );
    }
}
