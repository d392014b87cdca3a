//! Text prompts to input ids, equal to transformers' CLIP and SigLIP tokenizers.
//!
//! CLIP: the checkpoint's `tokenizer.json` (CLIPTokenizer's byte-level BPE with `</w>`, lowercase
//! normalizer and `<|startoftext|>` ... `<|endoftext|>` post-processor), through the `tokenizers`
//! crate; no padding (each prompt is encoded alone and pooled at its own eos).
//!
//! SigLIP: hub repos ship only SentencePiece's `spiece.model` (no tokenizer.json), which
//! transformers reads with the `sentencepiece` library. We read the model's pieces and scores
//! from the protobuf (a few lines by hand: no protobuf crate is a dependency, and only field 1
//! of ModelProto is needed) and build the equivalent `tokenizers` pipeline: NFKC, Metaspace
//! (`▁`, prepended to every word), Unigram with the same scores. Before that the text goes
//! through `SiglipTokenizer.canonicalize_text` (lowercase, ASCII punctuation removed, whitespace
//! runs collapsed, stripped); `</s>` is appended and the ids are padded with the pad token to
//! `max_length` 64 (as SigLIP was trained and the transformers docs require).

use crate::checkpoint::EncodeChecked;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::unicode::NFKC;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::Tokenizer;

use super::config::Family;

pub struct TextTokenizer {
    inner: Tokenizer,
    family: Family,
    /// SigLIP: appended after the text.
    eos_id: u32,
    /// SigLIP: fills up to `max_length`.
    pad_id: u32,
    max_length: usize,
    pub file: PathBuf,
}

impl TextTokenizer {
    /// Loads the tokenizer of a checkpoint folder; `max_length` is the text tower's
    /// `max_position_embeddings`.
    pub fn from_dir(dir: &Path, family: Family, max_length: usize) -> Result<Self> {
        match family {
            Family::Clip => {
                let file = dir.join("tokenizer.json");
                if !file.is_file() {
                    bail!(
                        "{} is not a complete CLIP checkpoint: tokenizer.json is missing",
                        dir.display()
                    );
                }
                let inner = crate::checkpoint::load_tokenizer(&file)?;
                Ok(Self {
                    inner,
                    family,
                    eos_id: 0,
                    pad_id: 0,
                    max_length,
                    file,
                })
            }
            Family::Siglip => {
                let file = dir.join("spiece.model");
                if !file.is_file() {
                    bail!(
                        "{} is not a complete SigLIP checkpoint: spiece.model is missing",
                        dir.display()
                    );
                }
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let (pieces, normalizer) = parse_sentencepiece(&bytes)
                    .with_context(|| format!("{}: not a SentencePiece model", file.display()))?;
                // Which normalisation sentencepiece applies before segmenting. The NFKC family
                // maps onto tokenizers' NFKC (case folding is moot: the text is lowercased
                // first); anything else (a custom charsmap) would silently differ, so refuse it.
                let nfkc = match normalizer.as_str() {
                    "" | "nmt_nfkc" | "nfkc" | "nmt_nfkc_cf" | "nfkc_cf" => true,
                    "identity" => false,
                    other => bail!(
                        "{}: SentencePiece normalizer {other:?} is not supported (nmt_nfkc, nfkc or identity)",
                        file.display()
                    ),
                };
                let (eos, pad, unk) = special_tokens(dir)?;
                let find = |tok: &str| -> Result<u32> {
                    pieces
                        .iter()
                        .position(|p| p.piece == tok)
                        .map(|i| i as u32)
                        .ok_or_else(|| anyhow!("{}: has no piece {tok:?}", file.display()))
                };
                let eos_id = find(&eos)?;
                let pad_id = find(&pad)?;
                let unk_id = pieces
                    .iter()
                    .position(|p| p.kind == PIECE_UNKNOWN)
                    .or_else(|| pieces.iter().position(|p| p.piece == unk));
                let vocab: Vec<(String, f64)> = pieces
                    .iter()
                    .map(|p| (p.piece.clone(), p.score as f64))
                    .collect();
                let model = Unigram::from(vocab, unk_id, false)
                    .map_err(|e| anyhow!("{}: {e}", file.display()))?;
                let mut inner = Tokenizer::new(model);
                if nfkc {
                    inner.with_normalizer(Some(NFKC));
                }
                inner.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
                Ok(Self {
                    inner,
                    family,
                    eos_id,
                    pad_id,
                    max_length,
                    file,
                })
            }
        }
    }

    /// The ids the Python processor gives `text` (SigLIP: padded to `max_length`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode_unpadded(text)?;
        if self.family == Family::Siglip {
            ids.resize(self.max_length, self.pad_id);
        }
        Ok(ids)
    }

    /// The ids before padding (SigLIP: content then `</s>`, truncated to `max_length`).
    pub fn encode_unpadded(&self, text: &str) -> Result<Vec<u32>> {
        match self.family {
            Family::Clip => {
                let enc = self
                    .inner
                    .encode_checked(text, true)
                    .map_err(|e| anyhow!("tokenizing {text:?}: {e}"))?;
                let ids = enc.get_ids().to_vec();
                if ids.len() > self.max_length {
                    bail!(
                        "prompt {text:?} is {} tokens, more than CLIP's {} positions",
                        ids.len(),
                        self.max_length
                    );
                }
                Ok(ids)
            }
            Family::Siglip => {
                let canon = canonicalize_text(text);
                let enc = self
                    .inner
                    .encode_checked(canon.as_str(), false)
                    .map_err(|e| anyhow!("tokenizing {text:?}: {e}"))?;
                let mut ids = enc.get_ids().to_vec();
                // truncation=True keeps room for the eos.
                ids.truncate(self.max_length.saturating_sub(1));
                ids.push(self.eos_id);
                Ok(ids)
            }
        }
    }
}

/// `SiglipTokenizer.canonicalize_text`: lowercase, drop `string.punctuation` (ASCII), collapse
/// whitespace runs to one space, strip.
pub fn canonicalize_text(text: &str) -> String {
    let lowered = text.to_lowercase();
    let kept: String = lowered
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// eos, pad and unk strings from tokenizer_config.json (SigLIP defaults `</s>`, `</s>`, `<unk>`).
fn special_tokens(dir: &Path) -> Result<(String, String, String)> {
    let mut eos = "</s>".to_string();
    let mut pad = "</s>".to_string();
    let mut unk = "<unk>".to_string();
    let path = dir.join("tokenizer_config.json");
    if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        // Either a string or an AddedToken object with `content`.
        let get = |k: &str| -> Option<String> {
            let x = v.get(k)?;
            x.as_str().map(str::to_string).or_else(|| {
                x.get("content")
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            })
        };
        if let Some(x) = get("eos_token") {
            eos = x;
        }
        if let Some(x) = get("pad_token") {
            pad = x;
        }
        if let Some(x) = get("unk_token") {
            unk = x;
        }
    }
    Ok((eos, pad, unk))
}

const PIECE_UNKNOWN: u64 = 2;

#[derive(Debug, Clone, PartialEq)]
struct Piece {
    piece: String,
    score: f32,
    /// sentencepiece `SentencePiece.Type` (1 normal, 2 unknown, 3 control, 4 user-defined, ...).
    kind: u64,
}

/// Reads `ModelProto.pieces` (field 1: `SentencePiece { piece = 1; score = 2; type = 3 }`) and
/// the normalizer's name (`ModelProto.normalizer_spec` = 3, its `name` = 1); skips the rest.
fn parse_sentencepiece(buf: &[u8]) -> Result<(Vec<Piece>, String)> {
    let mut pieces = Vec::new();
    let mut normalizer = String::new();
    let mut r = Reader { buf, pos: 0 };
    while !r.done() {
        let (field, wire) = r.key()?;
        if field == 1 && wire == 2 {
            let body = r.bytes()?;
            let mut pr = Reader { buf: body, pos: 0 };
            let mut p = Piece {
                piece: String::new(),
                score: 0.0,
                kind: 1,
            };
            while !pr.done() {
                let (f, w) = pr.key()?;
                match (f, w) {
                    (1, 2) => {
                        p.piece = String::from_utf8(pr.bytes()?.to_vec())
                            .map_err(|_| anyhow!("piece {} is not UTF-8", pieces.len()))?
                    }
                    (2, 5) => p.score = f32::from_le_bytes(pr.fixed::<4>()?),
                    (3, 0) => p.kind = pr.varint()?,
                    _ => pr.skip(w)?,
                }
            }
            pieces.push(p);
        } else if field == 3 && wire == 2 {
            let mut nr = Reader {
                buf: r.bytes()?,
                pos: 0,
            };
            while !nr.done() {
                let (f, w) = nr.key()?;
                if (f, w) == (1, 2) {
                    normalizer = String::from_utf8_lossy(nr.bytes()?).into_owned();
                } else {
                    nr.skip(w)?;
                }
            }
        } else {
            r.skip(wire)?;
        }
    }
    if pieces.is_empty() {
        bail!("no pieces");
    }
    Ok((pieces, normalizer))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| anyhow!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint too long at byte {}", self.pos)
    }

    fn key(&mut self) -> Result<(u64, u8)> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| anyhow!("truncated field at byte {}", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.varint()? as usize;
        self.take(n)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn skip(&mut self, wire: u8) -> Result<()> {
        match wire {
            0 => {
                self.varint()?;
            }
            1 => {
                self.take(8)?;
            }
            2 => {
                self.bytes()?;
            }
            5 => {
                self.take(4)?;
            }
            w => bail!("unsupported protobuf wire type {w} at byte {}", self.pos),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_like_siglip() {
        assert_eq!(
            canonicalize_text("  A Photo,  of a  SURPRISED-face! "),
            "a photo of a surprisedface"
        );
    }

    #[test]
    fn truncated_protobuf_is_an_error() {
        // field 1, length 10, but only 2 bytes follow
        assert!(parse_sentencepiece(&[0x0a, 10, 1, 2]).is_err());
        assert!(parse_sentencepiece(&[]).is_err());
    }
}
