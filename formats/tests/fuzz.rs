//! Fuzz-style robustness over the golden file: every truncation and every single-bit flip
//! (raw, and with the header checksum recomputed so the flip reaches the deeper checks),
//! plus random multi-byte corruption. The reader must return an error or a file whose
//! tensors are all readable; it must never panic.

use pipit_format::blocks::dequantize;
use pipit_format::crc32c::{crc32c, update};
use pipit_format::{FormatError, PipitFile};
use std::collections::BTreeMap;

fn golden() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/golden.pipit"
    ))
    .unwrap()
}

fn fix_crc(b: &mut [u8]) {
    let meta_len = u64::from_le_bytes(b[16..24].try_into().unwrap());
    let end = (64u64.saturating_add(meta_len)).min(b.len() as u64) as usize;
    let crc = update(crc32c(&b[..60]), &b[64..end]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Parses `b`; if it is accepted, checks it is consistent: every tensor's bytes are in
/// the file and decode. Returns the error variant's name, or "ok".
fn check(b: &[u8]) -> String {
    match PipitFile::parse(b) {
        Ok(f) => {
            for t in &f.tensors {
                let data = t.data(b).expect("accepted tensor lies inside the file");
                let mut out = vec![0.0; usize::try_from(t.n_elems()).unwrap()];
                dequantize(t.dtype, data, &mut out).expect("accepted tensor decodes");
            }
            let _ = f.verify_data(b);
            "ok".to_string()
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            let dbg = format!("{e:?}");
            dbg.split([' ', '{', '(']).next().unwrap().to_string()
        }
    }
}

#[test]
fn every_truncation_is_an_error() {
    let g = golden();
    for cut in 0..g.len() {
        let e = PipitFile::parse(&g[..cut]).unwrap_err();
        assert!(
            matches!(e, FormatError::Truncated { .. }),
            "cut {cut}: {e:?}"
        );
    }
}

#[test]
fn every_bit_flip_is_handled() {
    let g = golden();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for fix in [false, true] {
        for bit in 0..g.len() * 8 {
            let mut b = g.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            if fix && !(60..64).contains(&(bit / 8)) {
                fix_crc(&mut b);
            }
            *seen.entry(check(&b)).or_default() += 1;
        }
    }
    // The sweep reaches deep checks, not just the checksum.
    for variant in [
        "HeaderChecksum",
        "BadMagic",
        "UnsupportedVersion",
        "MetaTruncated",
        "BadUtf8",
        "UnknownDType",
        "SizeMismatch",
        "ok",
    ] {
        assert!(
            seen.contains_key(variant),
            "no flip produced {variant}: {seen:?}"
        );
    }
}

#[test]
fn random_corruption_is_handled() {
    let g = golden();
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _ in 0..20_000 {
        let mut b = g.clone();
        let n = 1 + next() % 8;
        for _ in 0..n {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        if next() % 2 == 0 {
            fix_crc(&mut b);
        }
        let cut = if next() % 4 == 0 {
            (next() % b.len() as u64) as usize
        } else {
            b.len()
        };
        check(&b[..cut]);
    }
}
