//! Loading InternVL checkpoints that are incomplete, inconsistent or corrupt: every failure
//! names the file or tensor and, for tensors, the expected and the found shape. Works on
//! temporary copies of the tiny fixtures (`tests/fixtures/internvl/`, or `$INTERNVL_FIXTURES`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use faceval_models::internvl::InternVl;

fn fixtures() -> PathBuf {
    match std::env::var_os("INTERNVL_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/internvl"),
    }
}

/// Copies fixture checkpoint `name` into a fresh temp dir.
fn copy_checkpoint(name: &str) -> (tempfile::TempDir, PathBuf) {
    let src = fixtures().join(name);
    assert!(
        src.is_dir(),
        "fixture {} missing; run `python tools/make_internvl_fixtures.py`",
        src.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    (tmp, dst)
}

fn load_err(dir: &Path) -> String {
    match InternVl::load(dir, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

/// Rewrites the single-file checkpoint's weights through `edit`.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, &path).unwrap();
}

#[test]
fn fixtures_load_in_every_layout() {
    for name in [
        "tiny-300m-legacy",
        "tiny-300m-current",
        "tiny-300m-original",
        "tiny-6b",
    ] {
        let m = InternVl::load(&fixtures().join(name), &Device::Cpu, DType::F32)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(m.weight_bytes() > 0);
        assert!(!m.eos_token_ids().is_empty(), "{name}: no EOS id found");
    }
}

#[test]
fn missing_tensor_is_named_with_its_expected_shape() {
    let (_tmp, dir) = copy_checkpoint("tiny-300m-current");
    let name = "model.vision_tower.encoder.layer.1.attention.k_proj.weight";
    let mut shape = vec![];
    edit_weights(&dir, |t| {
        shape = t
            .remove(name)
            .expect("fixture has the tensor")
            .dims()
            .to_vec();
    });
    let err = load_err(&dir);
    assert!(err.contains(name), "{err}");
    assert!(err.contains("missing tensor"), "{err}");
    assert!(err.contains(&format!("{shape:?}")), "{err}");
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let (_tmp, dir) = copy_checkpoint("tiny-300m-current");
    let name = "model.language_model.layers.0.mlp.up_proj.weight";
    let (mut want, mut found) = (vec![], vec![]);
    edit_weights(&dir, |t| {
        let w = t[name].clone();
        want = w.dims().to_vec();
        let shorter = w.narrow(0, 0, want[0] - 1).unwrap().contiguous().unwrap();
        found = shorter.dims().to_vec();
        t.insert(name.to_string(), shorter);
    });
    let err = load_err(&dir);
    assert!(err.contains(name), "{err}");
    assert!(err.contains(&format!("has shape {found:?}")), "{err}");
    assert!(
        err.contains(&format!("config.json implies {want:?}")),
        "{err}"
    );
}

#[test]
fn unsupported_tensor_dtype_is_named() {
    let (_tmp, dir) = copy_checkpoint("tiny-300m-current");
    let name = "model.multi_modal_projector.linear_1.bias";
    edit_weights(&dir, |t| {
        let b = t[name].to_dtype(DType::I64).unwrap();
        t.insert(name.to_string(), b);
    });
    let err = load_err(&dir);
    assert!(err.contains(name) && err.contains("dtype"), "{err}");
}

#[test]
fn original_layout_fused_qkv_errors_name_the_fused_tensor() {
    let (_tmp, dir) = copy_checkpoint("tiny-300m-original");
    let name = "vision_model.encoder.layers.0.attn.qkv.weight";
    let mut shape = vec![];
    edit_weights(&dir, |t| {
        shape = t
            .remove(name)
            .expect("fixture has the fused qkv")
            .dims()
            .to_vec();
    });
    let err = load_err(&dir);
    assert!(err.contains(name), "{err}");
    assert!(
        err.contains("model.vision_tower.encoder.layer.0.attention.q_proj.weight"),
        "{err}"
    );
    assert!(err.contains(&format!("{shape:?}")), "{err}");
}

#[test]
fn config_disagreeing_with_weights_fails_on_the_first_tensor() {
    let (_tmp, dir) = copy_checkpoint("tiny-6b");
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let inter = v["text_config"]["intermediate_size"].as_u64().unwrap();
    v["text_config"]["intermediate_size"] = serde_json::json!(inter * 2);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("mlp.gate_proj.weight"), "{err}");
    assert!(err.contains(&format!("{}", inter * 2)), "{err}");
}

#[test]
fn incomplete_folders_are_told_apart_from_corrupt_ones() {
    // No config.json.
    let (_t1, dir) = copy_checkpoint("tiny-300m-current");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("config.json is missing"), "{err}");

    // No weights at all.
    let (_t2, dir) = copy_checkpoint("tiny-300m-current");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("has no weights"), "{err}");

    // Truncated weights file.
    let (_t3, dir) = copy_checkpoint("tiny-300m-current");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("corrupt weights file") && err.contains("model.safetensors"),
        "{err}"
    );

    // Not a safetensors file.
    std::fs::write(&path, b"<html>rate limited</html>").unwrap();
    let err = load_err(&dir);
    assert!(err.contains("corrupt weights file"), "{err}");

    // A shard named by the index is missing.
    let (_t4, dir) = copy_checkpoint("tiny-300m-legacy");
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let shard = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(dir.join(&shard)).unwrap();
    let err = load_err(&dir);
    assert!(err.contains(&shard) && err.contains("missing"), "{err}");

    // Nonexistent folder.
    let err = load_err(Path::new("/nonexistent/faceval/model"));
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn unknown_config_dtype_is_rejected() {
    let (_tmp, dir) = copy_checkpoint("tiny-300m-current");
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["dtype"] = serde_json::json!("int3");
    v.as_object_mut().unwrap().remove("torch_dtype");
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("dtype") && err.contains("int3"), "{err}");
}
