//! `pipit inspect`: a report of a model file for people.

use pipit::model::{Activation, Model, RopePairs};
use pipit::session::{MemoryReport, SessionParams};
use pipit_format::DType;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The contexts `pipit inspect` shows a session's memory at: the CLI's default, 8192 and the
/// trained context (those within it), and `extra` (checked by the caller), in order.
fn contexts(n_ctx_train: usize, extra: &[usize]) -> Vec<usize> {
    let mut v: Vec<usize> = [SessionParams::default().n_ctx, 8192, n_ctx_train]
        .into_iter()
        .filter(|&n| n <= n_ctx_train)
        .chain(extra.iter().copied())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// One line of the memory of a session of `n_ctx` positions: its KV cache in MiB and
/// bytes, its share of a full-size cache when sliding layers keep only their window, its
/// scratch and the total.
fn session_line(model: &Model, params: SessionParams, n_ctx: usize) -> String {
    let hp = model.hparams();
    let at = |full_window_cache| SessionParams {
        n_ctx,
        full_window_cache,
        ..params
    };
    let trained = if n_ctx == hp.n_ctx_train {
        " (trained)"
    } else {
        ""
    };
    let m = match MemoryReport::estimate(model, &at(false)) {
        Ok(m) => m,
        Err(e) => return format!("n_ctx {n_ctx}{trained}: {e}"),
    };
    let share = if hp.layer_sliding.contains(&true) {
        match MemoryReport::estimate(model, &at(true)) {
            Ok(full) => format!(
                "; {:.1}% of a full-size cache's {}",
                100.0 * m.kv_cache as f64 / full.kv_cache as f64,
                mib(full.kv_cache)
            ),
            Err(e) => format!("; full-size cache: {e}"),
        }
    } else {
        String::new()
    };
    format!(
        "n_ctx {n_ctx}{trained}: KV cache {} ({} bytes{share}) + scratch {} = {}",
        mib(m.kv_cache),
        m.kv_cache,
        mib(m.scratch),
        mib(m.kv_cache + m.scratch)
    )
}

/// The `pipit inspect` report: file and header, hyper-parameters, tokenizer summary, tensor
/// table, and the memory a session needs at the default context, 8192, the trained
/// context and each of `extra_ctx`. `kernels` names the kernel set in use.
pub fn report(model: &Model, kernels: &str, extra_ctx: &[usize]) -> String {
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

    // What sessions with the default parameters (the CLI's and the C ABI's) take at a few
    // contexts: the figures the KV cache sizes itself by (MemoryReport::estimate), so
    // sliding-window layers count their window, not the context.
    let params = SessionParams::default();
    line(format!(
        "memory     weights {} {how}; a session's KV cache ({:?}, batches of {}) and scratch:",
        mib(f.file_len),
        params.kv_type,
        params.n_batch
    ));
    for n_ctx in contexts(hp.n_ctx_train, extra_ctx) {
        line(format!("           {}", session_line(model, params, n_ctx)));
    }
    line(format!("kernels    {kernels}"));
    out
}
