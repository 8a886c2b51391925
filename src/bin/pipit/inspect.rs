//! `pipit inspect`: a report of a model file for people.

use pipit::model::{Activation, Model, RopePairs};
use pipit::session::{MemoryReport, SessionParams};
use pipit_format::DType;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The `pipit inspect` report: file and header, hyper-parameters, tokenizer summary, tensor
/// table, and the memory a session needs. `kernels` names the kernel set in use.
pub fn report(model: &Model, kernels: &str) -> String {
    let f = model.file();
    let hp = model.hparams();
    let meta = &f.metadata;
    let text = |key: &str| meta.opt_str(key).ok().flatten().unwrap_or("");
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };

    let how = if model.is_mapped() {
        "mapped"
    } else {
        "read into memory"
    };
    line(format!(
        "file       {}: {} bytes ({}), {how}",
        model.source(),
        f.file_len,
        mib(f.file_len)
    ));
    line(format!(
        "format     version {}, header crc32c {:#010x}, {} tensors, data at byte {}",
        f.version,
        f.header_crc32c,
        f.tensors.len(),
        f.data_offset
    ));
    let arch = hp.arch.name();
    line(format!(
        "model      '{}' ({arch}), converted from {}",
        text("general.name"),
        text("general.source")
    ));

    line(format!(
        "hparams    n_layer {}, d_model {}, n_head {}, n_kv_head {}, head_dim {}, d_ff {}, n_vocab {}, n_ctx_train {}",
        hp.n_layer, hp.d_model, hp.n_head, hp.n_kv_head, hp.head_dim, hp.d_ff, hp.n_vocab, hp.n_ctx_train
    ));
    let pairs = match hp.rope_pairs {
        RopePairs::Adjacent => "adjacent",
        RopePairs::Half => "half",
    };
    line(format!(
        "           rope dim {}, theta {}, local theta {}, scale {}, pairs {pairs}",
        hp.rope_dim, hp.rope_theta, hp.rope_theta_local, hp.rope_scale
    ));
    let activation = match hp.activation {
        Activation::Silu => "silu",
        Activation::GeluTanh => "gelu_tanh",
    };
    let softcap = hp
        .final_logit_softcap
        .map_or("none".to_string(), |c| c.to_string());
    line(format!(
        "           norm_eps {:e}, activation {activation}, tied embeddings {}, embed scale {}, attn scale {}, logit softcap {softcap}",
        hp.norm_eps,
        yes_no(hp.tied),
        hp.embed_scale,
        hp.attn_scale
    ));
    let n_sliding = hp.layer_sliding.iter().filter(|&&s| s).count();
    line(if n_sliding == 0 {
        "           sliding window: none".to_string()
    } else {
        format!(
            "           sliding window {} tokens on {n_sliding} of {} layers",
            hp.sliding_window, hp.n_layer
        )
    });

    let tok = model.tokenizer();
    let named = |id: Option<u32>| {
        id.map_or("none".to_string(), |id| {
            format!("{id} {:?}", tok.token_text(id))
        })
    };
    let eog: Vec<String> = (0..tok.n_vocab() as u32)
        .filter(|&id| tok.is_eog(id))
        .map(|id| named(Some(id)))
        .collect();
    let n_merges = meta
        .get("tokenizer.merges")
        .and_then(|v| v.array_len())
        .unwrap_or(0);
    let template = meta.opt_str("tokenizer.chat_template").ok().flatten();
    line(format!(
        "tokenizer  {} (pre {}), {} tokens, {n_merges} merges, bos {}, eos {}, end of generation [{}], add_bos {}, chat template {}",
        text("tokenizer.kind"),
        text("tokenizer.pre"),
        tok.n_vocab(),
        named(tok.bos()),
        named(tok.eos()),
        eog.join(", "),
        yes_no(tok.add_bos()),
        template.map_or("none".to_string(), |t| format!("{} bytes", t.len()))
    ));

    line(format!(
        "tensors    {:<28} {:<5} {:>16} {:>12} {:>12}",
        "name", "dtype", "shape", "bytes", "offset"
    ));
    let mut totals: Vec<(DType, usize, u64)> = Vec::new();
    for t in &f.tensors {
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        line(format!(
            "           {:<28} {:<5} {:>16} {:>12} {:>12}",
            t.name,
            t.dtype.name(),
            shape.join(" x "),
            t.size,
            t.offset
        ));
        match totals.iter_mut().find(|(d, _, _)| *d == t.dtype) {
            Some(e) => {
                e.1 += 1;
                e.2 += t.size;
            }
            None => totals.push((t.dtype, 1, t.size)),
        }
    }
    let totals: Vec<String> = totals
        .iter()
        .map(|(d, n, b)| format!("{d} {n} tensors {}", mib(*b)))
        .collect();
    line(format!("           totals: {}", totals.join("; ")));

    // What a session with the default parameters (the CLI's and the C ABI's) would take.
    let params = SessionParams::default();
    let per_1k = SessionParams {
        n_ctx: 1024,
        ..params
    };
    let kv_per_1k = MemoryReport::estimate(model, &per_1k).map_or(0, |m| m.kv_cache);
    match MemoryReport::estimate(model, &params) {
        Ok(m) => line(format!(
            "memory     weights {} {how}; KV cache ({:?}) {} per 1k tokens of context; a session \
             with n_ctx {} and batches of {}: KV cache {} + scratch {} = {}",
            mib(f.file_len),
            params.kv_type,
            mib(kv_per_1k),
            params.n_ctx,
            params.n_batch,
            mib(m.kv_cache),
            mib(m.scratch),
            mib(m.kv_cache + m.scratch)
        )),
        Err(e) => line(format!(
            "memory     weights {} {how}; session estimate: {e}",
            mib(f.file_len)
        )),
    }
    line(format!("kernels    {kernels}"));
    out
}
