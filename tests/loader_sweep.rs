//! Corruption sweep over a real converted model (SmolLM2-135M-Instruct): truncation at
//! over 200 offsets and 1,500 single-bit flips in the header, the tensor directory
//! and the tokenizer metadata. Every case must end in an error or in a model that passes
//! every check; nothing may panic. Flips are tried twice: as they are (the header checksum
//! catches them) and with the checksum recomputed, so they reach the deeper checks.
//!
//! Needs `models/SmolLM2-135M-Instruct.pipit`, which `tools/test-models.sh` (run by
//! `tools/test.sh` and CI) fetches and converts; by hand: `tools/fetch-models.sh smollm2`,
//! then `cargo run --profile ci -p pipit-convert -- models/SmolLM2-135M-Instruct.Q4_1.gguf
//! -o models/SmolLM2-135M-Instruct.pipit`. Without it the tests fail; they never skip.

use pipit::model::Model;
use pipit::Error;
use pipit_format::crc32c::{crc32c, update};
use pipit_format::{FormatError, PipitFile, Value};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.pipit"
);

fn model_bytes() -> Vec<u8> {
    if !Path::new(MODEL).exists() {
        panic!(
            "{MODEL} is missing: run tools/test-models.sh, or tools/fetch-models.sh smollm2 \
             and then `cargo run --profile ci -p pipit-convert -- \
             models/SmolLM2-135M-Instruct.Q4_1.gguf -o models/SmolLM2-135M-Instruct.pipit`"
        );
    }
    std::fs::read(MODEL).unwrap()
}

/// Encoded size of one metadata entry (formats/SPEC.md, "Metadata entries").
fn entry_len(key: &str, v: &Value) -> usize {
    let strs = |v: &[String]| v.iter().map(|s| 4 + s.len()).sum::<usize>();
    4 + key.len()
        + 1
        + match v {
            Value::U8(_) | Value::Bool(_) => 1,
            Value::U32(_) | Value::I32(_) | Value::F32(_) => 4,
            Value::U64(_) => 8,
            Value::Str(s) => 4 + s.len(),
            Value::ArrU8(a) => 9 + a.len(),
            Value::ArrU32(a) => 9 + 4 * a.len(),
            Value::ArrI32(a) => 9 + 4 * a.len(),
            Value::ArrF32(a) => 9 + 4 * a.len(),
            Value::ArrStr(a) => 9 + strs(a),
        }
}

/// Byte ranges of the header, of the `tokenizer.*` entries and of the tensor directory.
fn regions(file: &PipitFile, bytes: &[u8]) -> [(&'static str, std::ops::Range<usize>); 3] {
    let meta_len = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let mut at = 64 + 4;
    let (mut tok_start, mut tok_end) = (usize::MAX, 0);
    for (k, v) in file.metadata.iter() {
        let n = entry_len(k, v);
        if k.starts_with("tokenizer.") {
            tok_start = tok_start.min(at);
            tok_end = tok_end.max(at + n);
        }
        at += n;
    }
    assert!(
        tok_start < tok_end && tok_end <= at,
        "the file has tokenizer metadata"
    );
    let dir = at..64 + meta_len;
    let dir_len: usize = file
        .tensors
        .iter()
        .map(|t| 4 + t.name.len() + 8 + 8 * t.shape.len() + 20)
        .sum();
    assert_eq!(dir.len(), dir_len, "region arithmetic matches the file");
    [
        ("header", 0..64),
        ("tokenizer", tok_start..tok_end),
        ("directory", dir),
    ]
}

/// Recomputes the header checksum in place over the section the header now announces.
fn fix_crc(b: &mut [u8]) {
    let meta_len = u64::from_le_bytes(b[16..24].try_into().unwrap());
    let end = 64u64.saturating_add(meta_len).min(b.len() as u64) as usize;
    let crc = update(crc32c(&b[..60]), &b[64..end]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Runs every load check on `b`; returns a short outcome name. A panic is reported, not
/// propagated, so one run lists every failing case.
fn outcome(b: &[u8]) -> Result<String, String> {
    catch_unwind(AssertUnwindSafe(|| match Model::validate(b) {
        Ok(()) => "ok".to_string(),
        Err(Error::Format(e)) => {
            assert!(!e.to_string().is_empty());
            format!("{e:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap()
                .to_string()
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            format!("{e:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap()
                .to_string()
        }
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "panic".into())
    })
}

/// xorshift64*: deterministic positions.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as usize % n
    }
}

#[test]
fn truncations_are_errors() {
    let bytes = model_bytes();
    let file = PipitFile::parse(&bytes).expect("the converted model is valid");
    let data = file.data_offset as usize;
    let mut cuts: Vec<usize> = (0..=64).collect();
    cuts.extend((1..100).map(|i| 64 + (data - 64) * i / 100));
    cuts.extend((0..100).map(|i| data + (bytes.len() - data) * i / 100));
    cuts.extend([data - 1, data + 1, bytes.len() - 1]);
    cuts.sort_unstable();
    cuts.dedup();
    assert!(cuts.len() >= 200);
    for &cut in &cuts {
        let e = PipitFile::parse(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(e, FormatError::Truncated { .. }),
            "cut at {cut}: {e:?}"
        );
        assert!(matches!(
            Model::validate(&bytes[..cut]),
            Err(Error::Format(FormatError::Truncated { .. }))
        ));
    }
}

#[test]
fn bit_flips_never_panic() {
    let mut bytes = model_bytes();
    Model::validate(&bytes).expect("the converted model is valid");
    let file = PipitFile::parse(&bytes).unwrap();
    let regions = regions(&file, &bytes);
    let good_crc: [u8; 4] = bytes[60..64].try_into().unwrap();
    let mut rng = Rng(0x5EED_F00D_B175);
    let mut seen: BTreeMap<(&str, bool, String), usize> = BTreeMap::new();
    let mut panics = Vec::new();
    // 1,200 raw flips (the header checks and the header checksum stop them) and 300 with
    // the checksum recomputed, a third in each region.
    const RAW: usize = 1200;
    const FIXED: usize = 300;
    for case in 0..RAW + FIXED {
        let (region, range) = &regions[case % 3];
        let fixed = case >= RAW;
        let pos = range.start + rng.below(range.len());
        let bit = 1u8 << rng.below(8);
        bytes[pos] ^= bit;
        if fixed && !(60..64).contains(&pos) {
            fix_crc(&mut bytes);
        }
        match outcome(&bytes) {
            Ok(name) => *seen.entry((region, fixed, name)).or_default() += 1,
            Err(msg) => panics.push(format!(
                "{region} byte {pos} bit {bit:#04x} (crc fixed: {fixed}): {msg}"
            )),
        }
        bytes[pos] ^= bit;
        bytes[60..64].copy_from_slice(&good_crc);
    }
    assert!(
        panics.is_empty(),
        "{} panics:\n{}",
        panics.len(),
        panics.join("\n")
    );
    Model::validate(&bytes).expect("every flip was undone");
    let count = |region: &str, fixed: bool, name: &str| {
        seen.get(&(region, fixed, name.to_string()))
            .copied()
            .unwrap_or(0)
    };
    // Every raw flip is caught on open: in the header by its own checks or the checksum,
    // elsewhere by the checksum.
    assert_eq!(count("header", false, "ok"), 0, "{seen:?}");
    assert_eq!(
        count("tokenizer", false, "HeaderChecksum"),
        RAW / 3,
        "{seen:?}"
    );
    assert_eq!(
        count("directory", false, "HeaderChecksum"),
        RAW / 3,
        "{seen:?}"
    );
    // With the checksum fixed, flips reach the directory, layout and tokenizer checks.
    for (region, name) in [
        ("directory", "SizeMismatch"),
        ("directory", "MissingTensor"),
        ("directory", "UnknownDType"),
        ("tokenizer", "BadUtf8"),
        ("tokenizer", "LimitExceeded"),
    ] {
        assert!(
            count(region, true, name) > 0,
            "no {region} flip gave {name}: {seen:?}"
        );
    }
}
