//! `pipit-convert INPUT -o OUT.pipit [--quant keep|q4|q4_0|q8|q4_k_m|q5_k_m|q6_k]`

use clap::{Parser, ValueEnum};
use pipit_convert::convert::{convert, Quant};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum QuantArg {
    /// Nearest pipit type: GGUF Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q5_K/Q6_K/F16 copied bit for
    /// bit, F32/BF16 -> F32, Q2_K/Q3_K/Q8_K -> Q8_0
    Keep,
    /// Every matrix requantized to Q4_1 (4-bit with scale and minimum)
    Q4,
    /// Every matrix requantized to Q4_0 (4-bit, scale only)
    #[value(name = "q4_0")]
    Q4_0,
    /// Every matrix requantized to Q8_0
    Q8,
    /// llama.cpp's Q4_K_M mix (Q4_K; Q6_K for the head and some attn_v/ffn_down; Q5_0/Q8_0
    /// for rows that are not whole 256-value blocks)
    #[value(name = "q4_k_m")]
    Q4KM,
    /// llama.cpp's Q5_K_M mix (as q4_k_m with Q5_K; Q5_1 fallback)
    #[value(name = "q5_k_m")]
    Q5KM,
    /// Every matrix as Q6_K (Q8_0 for rows that are not whole 256-value blocks)
    #[value(name = "q6_k")]
    Q6K,
}

/// Converts a GGUF file or a Hugging Face model directory into a .pipit file.
///
/// INPUT is a GGUF file (llama, qwen2, qwen3, phi3, gemma2 or gemma3; tensors F32, F16,
/// BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, Q8_K) or a Hugging Face directory with
/// config.json (model_type llama, mistral, qwen2, qwen3, phi3, gemma2 or gemma3_text),
/// tokenizer.json, optional tokenizer_config.json and *.safetensors in F32/F16/BF16.
///
/// Norms and biases are always stored as F32; a matrix whose source type is already the
/// target type is copied bit for bit; a matrix whose rows are not whole 32-element blocks
/// stays F16/F32. Hugging Face q/k rows of `llama` models are permuted to the adjacent-pair
/// RoPE layout GGUF uses (model.rope_pairs = adjacent; the other families keep split halves,
/// as their GGUF files do), so both inputs of the same checkpoint give the same tensors.
/// Fused tensors (phi3's qkv and gate/up) are split. Gemma's Hugging Face norm weights w
/// (applied as 1 + w) are stored as 1 + w, as in its GGUF files.
///
/// Progress (one line per tensor) goes to stderr; at the end a table of every tensor's
/// relative RMSE against the source (0 when copied unchanged) and the file size go to
/// stdout. The file is written under a temporary name and renamed when complete.
#[derive(Parser, Debug)]
#[command(name = "pipit-convert", version, verbatim_doc_comment)]
struct Args {
    /// GGUF file or Hugging Face model directory
    input: PathBuf,
    /// Output .pipit file
    #[arg(short, long, value_name = "OUT.pipit")]
    output: PathBuf,
    /// How matrices are stored
    #[arg(long, value_enum, default_value_t = QuantArg::Keep)]
    quant: QuantArg,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let quant = match args.quant {
        QuantArg::Keep => Quant::Keep,
        QuantArg::Q4 => Quant::Q4,
        QuantArg::Q4_0 => Quant::Q4_0,
        QuantArg::Q8 => Quant::Q8,
        QuantArg::Q4KM => Quant::Q4KM,
        QuantArg::Q5KM => Quant::Q5KM,
        QuantArg::Q6K => Quant::Q6K,
    };
    let t0 = std::time::Instant::now();
    let mut stderr = std::io::stderr().lock();
    match convert(&args.input, &args.output, quant, &mut stderr) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            // The file is written; a closed stdout only loses the summary.
            let _ = report.print(&mut out);
            eprintln!(
                "wrote {} in {:.1} s",
                args.output.display(),
                t0.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pipit-convert: error: {e}");
            ExitCode::FAILURE
        }
    }
}
