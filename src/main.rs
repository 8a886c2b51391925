//! `pipit`: run, inspect and measure quantized language models from the command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use pipit::forward::Precision;
use pipit::model::{Model, OpenOptions};
use pipit::sampler::{Sampler, SamplerParams};
use pipit::session::{Session, SessionParams};
use pipit::tokenizer::Utf8Stream;
use pipit::{Error, Result};

#[derive(Parser)]
#[command(
    name = "pipit",
    version,
    about = "Run quantized language models (.pipit files) on small devices"
)]
#[command(
    after_help = "Models: convert a GGUF file or a Hugging Face directory with `pipit-convert`.\n\
Kernels: set PIPIT_KERNELS=scalar|avx2|avx512|avx512vnni|neon|dotprod|i8mm to force a path."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a continuation of a prompt, streamed to stdout (stats on stderr).
    Run(RunArgs),
    /// Print the token ids of a text as a JSON array.
    Tokenize(TokenizeArgs),
    /// Score a text: total and mean negative log-likelihood of its tokens.
    Score(ScoreArgs),
    /// Perplexity of a text file, following llama.cpp's protocol (comparable figures).
    Perplexity(PerplexityArgs),
    /// Show a model file: header, hyper-parameters, tokenizer, tensors and memory needs.
    Inspect(FileArgs),
    /// Recompute every checksum of a model file.
    Verify(FileArgs),
    /// Measure prompt processing and generation speed (llama-bench's method).
    Bench(BenchArgs),
    /// Chat with an instruct model: its chat template, replies streamed, the conversation
    /// kept in the KV cache; one message per line from a pipe.
    Chat(pipit::chat::ChatArgs),
}

/// How to load the model and size the session.
#[derive(Args)]
struct ModelArgs {
    /// The .pipit model file.
    #[arg(short, long)]
    model: PathBuf,
    /// Threads for the matrix work (default: all cores).
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
    /// Context window in tokens.
    #[arg(long = "ctx", default_value_t = 2048)]
    ctx: usize,
    /// Read the file into memory instead of mapping it.
    #[arg(long)]
    no_mmap: bool,
    /// Keep activations in f32 (slower; matches an f32 reference implementation more closely).
    #[arg(long)]
    f32: bool,
    /// Skip the check of the session's memory against the machine's available memory.
    #[arg(long)]
    no_mem_check: bool,
}

impl ModelArgs {
    fn open(&self) -> Result<Arc<Model>> {
        let opts = OpenOptions {
            mmap: !self.no_mmap,
            ..OpenOptions::default()
        };
        Ok(Arc::new(Model::open_with(&self.model, &opts)?))
    }

    fn session(&self, model: &Arc<Model>, n_ctx: usize) -> Result<Session> {
        let precision = if self.f32 {
            Precision::F32
        } else {
            Precision::Int8
        };
        let params = SessionParams {
            n_ctx,
            n_threads: self.threads,
            precision,
            ..SessionParams::default()
        };
        new_session(model, params, !self.no_mem_check)
    }
}

/// A session, first checking (unless `mem_check` is off) that its KV cache and scratch fit
/// in the machine's available memory: zero-filling a cache larger than RAM would get the
/// process killed rather than give an error.
fn new_session(model: &Arc<Model>, params: SessionParams, mem_check: bool) -> Result<Session> {
    if mem_check {
        pipit::session::check_memory(model, &params, pipit::session::available_memory())
            .map_err(|e| match e {
                Error::OutOfMemory(what) => Error::OutOfMemory(format!(
                    "{what}; use a smaller --ctx, or --no-mem-check to try anyway"
                )),
                e => e,
            })?;
    }
    Session::new(Arc::clone(model), params)
}

/// Sampling flags shared by the generating commands.
#[derive(Args)]
struct SamplingArgs {
    /// Temperature; 0 is greedy (argmax, penalties and filters ignored).
    #[arg(long = "temp", default_value_t = 0.8)]
    temperature: f32,
    /// Keep the k most likely tokens (0: off).
    #[arg(long, default_value_t = 40)]
    top_k: u32,
    /// Keep the smallest set of tokens whose probability reaches p (1: off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than min-p times the most likely one (0: off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Penalty on tokens seen among the last --repeat-last-n (1: off).
    #[arg(long, default_value_t = 1.1)]
    repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    #[arg(long, default_value_t = 64)]
    repeat_last_n: u32,
    /// Seed of the random draw: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl SamplingArgs {
    fn params(&self) -> SamplerParams {
        SamplerParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt (special tokens such as <|im_start|> are recognised).
    #[arg(short, long)]
    prompt: String,
    /// Most tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(Args)]
struct TokenizeArgs {
    /// The .pipit model file.
    #[arg(short, long)]
    model: PathBuf,
    /// Do not add BOS even if the model asks for it.
    #[arg(long)]
    no_bos: bool,
    /// The text to tokenize.
    text: String,
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Read the text from this file.
    #[arg(short, long, conflicts_with = "text", required_unless_present = "text")]
    file: Option<PathBuf>,
    /// The text to score.
    #[arg(long)]
    text: Option<String>,
}

#[derive(Args)]
struct PerplexityArgs {
    /// The .pipit model file.
    #[arg(short, long)]
    model: PathBuf,
    /// The text file.
    #[arg(short, long)]
    file: PathBuf,
    /// Chunk length in tokens.
    #[arg(long = "ctx", default_value_t = 512)]
    ctx: usize,
    /// Threads for the matrix work (default: all cores).
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
    /// Keep activations in f32.
    #[arg(long)]
    f32: bool,
    /// Skip the check of the session's memory against the machine's available memory.
    #[arg(long)]
    no_mem_check: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// The .pipit model file.
    #[arg(short, long)]
    model: PathBuf,
    /// Prompt tokens processed as one batch (pp test; 0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    n_prompt: usize,
    /// Tokens generated one at a time (tg test; 0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    n_gen: usize,
    /// Repetitions of each test; the median is reported.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    reps: usize,
    /// Threads (default: all cores).
    #[arg(short, long, default_value_t = 0)]
    threads: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Skip the check of the session's memory against the machine's available memory.
    #[arg(long)]
    no_mem_check: bool,
}

#[derive(Args)]
struct FileArgs {
    /// The .pipit model file.
    file: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run(a),
        Command::Tokenize(a) => tokenize(a),
        Command::Score(a) => score(a),
        Command::Perplexity(a) => perplexity(a),
        Command::Inspect(a) => inspect(a),
        Command::Verify(a) => verify(a),
        Command::Bench(a) => bench(a),
        Command::Chat(a) => pipit::chat::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipit: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `println!` that returns an error instead of panicking when stdout cannot be written
/// (closed pipe, full disk): the command then fails with a message, no backtrace.
macro_rules! outln {
    ($($arg:tt)*) => {
        out(&mut std::io::stdout().lock(), format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

/// Writes to stdout, turning a closed pipe into a quiet stop rather than a panic.
fn out(w: &mut impl Write, bytes: &[u8]) -> Result<()> {
    w.write_all(bytes)
        .and_then(|()| w.flush())
        .map_err(|e| Error::Io {
            path: "stdout".into(),
            source: e,
        })
}

fn run(a: RunArgs) -> Result<()> {
    let model = a.model.open()?;
    let tok = model.tokenizer();
    let mut prompt = Vec::new();
    tok.encode(&a.prompt, tok.add_bos(), &mut prompt);
    if prompt.is_empty() {
        return Err(Error::InvalidArgument(
            "the prompt is empty and the model adds no BOS".into(),
        ));
    }
    let mut session = a.model.session(&model, a.model.ctx)?;
    let mut sampler = Sampler::new(a.sampling.params(), model.hparams().n_vocab)?;

    let t0 = Instant::now();
    session.eval(&prompt)?;
    let prompt_secs = t0.elapsed().as_secs_f64();

    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    let mut stream = Utf8Stream::new();
    let mut write_err = None;
    let t1 = Instant::now();
    let mut generated = 0usize;
    let mut stop_reason = "length";
    while generated < a.n_predict {
        let next = session.sample(&mut sampler)?;
        if tok.is_eog(next) {
            stop_reason = "end of text";
            break;
        }
        stream.push(tok.piece(next), |b| {
            if write_err.is_none() {
                write_err = out(&mut stdout, b).err();
            }
        });
        if let Some(e) = write_err.take() {
            return Err(e);
        }
        generated += 1;
        match session.eval(&[next]) {
            Ok(()) => {}
            Err(Error::ContextFull { .. }) => {
                stop_reason = "context full";
                break;
            }
            Err(e) => return Err(e),
        }
    }
    stream.finish(|b| write_err = out(&mut stdout, b).err());
    out(&mut stdout, b"\n")?;
    let gen_secs = t1.elapsed().as_secs_f64();
    eprintln!(
        "pipit: prompt {} tokens at {:.1} tok/s; generated {} tokens at {:.1} tok/s ({}); kernels {}, {} threads",
        prompt.len(),
        prompt.len() as f64 / prompt_secs,
        generated,
        generated as f64 / gen_secs.max(1e-9),
        stop_reason,
        session.kernel_name(),
        session.n_threads()
    );
    Ok(())
}

fn tokenize(a: TokenizeArgs) -> Result<()> {
    let model = Model::open(&a.model)?;
    let tok = model.tokenizer();
    let mut ids = Vec::new();
    tok.encode(&a.text, tok.add_bos() && !a.no_bos, &mut ids);
    let list: Vec<String> = ids.iter().map(u32::to_string).collect();
    outln!("[{}]", list.join(", "))?;
    Ok(())
}

/// Reads a text argument or file.
fn read_text(file: Option<&PathBuf>, text: Option<&String>) -> Result<String> {
    match (file, text) {
        (Some(path), _) => std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        }),
        (None, Some(t)) => Ok(t.clone()),
        (None, None) => Err(Error::InvalidArgument("give --file or --text".into())),
    }
}

fn score(a: ScoreArgs) -> Result<()> {
    let text = read_text(a.file.as_ref(), a.text.as_ref())?;
    let model = a.model.open()?;
    let tok = model.tokenizer();
    let mut ids = Vec::new();
    tok.encode(&text, tok.add_bos(), &mut ids);
    if ids.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "the text has {} token(s); scoring needs at least 2",
            ids.len()
        )));
    }
    let mut session = a.model.session(&model, ids.len())?;
    let total_nll = -session.score(&ids)?;
    let scored = ids.len() - 1;
    outln!(
        "tokens={} total_nll={:.6} mean_nll={:.6}",
        ids.len(),
        total_nll,
        total_nll / scored as f64
    )?;
    Ok(())
}

fn perplexity(a: PerplexityArgs) -> Result<()> {
    let text = read_text(Some(&a.file), None)?;
    let model = Arc::new(Model::open(&a.model)?);
    let tok = model.tokenizer();
    let mut ids = Vec::new();
    tok.encode(&text, tok.add_bos(), &mut ids);
    let ctx = a.ctx;
    if ctx < 4 {
        return Err(Error::InvalidArgument(format!(
            "--ctx must be at least 4, got {ctx}"
        )));
    }
    let n_chunks = ids.len() / ctx;
    if n_chunks == 0 {
        return Err(Error::InvalidArgument(format!(
            "the file has {} tokens, fewer than one chunk of --ctx {ctx}",
            ids.len()
        )));
    }
    let precision = if a.f32 {
        Precision::F32
    } else {
        Precision::Int8
    };
    let params = SessionParams {
        n_ctx: ctx,
        n_threads: a.threads,
        precision,
        ..SessionParams::default()
    };
    let mut session = new_session(&model, params, !a.no_mem_check)?;
    eprintln!("pipit: {} tokens, {n_chunks} chunks of {ctx}", ids.len());

    // llama.cpp's protocol: each chunk from an empty cache (its first token replaced by BOS
    // when the model adds one); score the predictions of tokens ctx/2+1 .. ctx-1.
    let first = ctx / 2;
    let (mut nll, mut count) = (0.0f64, 0usize);
    let mut chunk = vec![0u32; ctx];
    let t0 = Instant::now();
    for c in 0..n_chunks {
        chunk.copy_from_slice(&ids[c * ctx..(c + 1) * ctx]);
        if let (true, Some(bos)) = (tok.add_bos(), tok.bos()) {
            chunk[0] = bos;
        }
        session.reset();
        session.eval_all(&chunk, |i, logits| {
            if i >= first && i + 1 < ctx {
                nll -= pipit::session::log_softmax_at(logits, chunk[i + 1]);
                count += 1;
            }
        })?;
        eprint!("[{}]{:.4},", c + 1, (nll / count as f64).exp());
    }
    eprintln!();
    eprintln!(
        "pipit: {:.1} s, {:.1} tokens/s",
        t0.elapsed().as_secs_f64(),
        (n_chunks * ctx) as f64 / t0.elapsed().as_secs_f64()
    );
    outln!("PPL = {:.4}", (nll / count as f64).exp())?;
    Ok(())
}

fn inspect(a: FileArgs) -> Result<()> {
    let t0 = Instant::now();
    let model = Model::open(&a.file)?;
    let report = pipit::model::inspect_report(&model, pipit::kernels::kernels().name);
    outln!("{report}")?;
    eprintln!(
        "pipit: inspected in {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn verify(a: FileArgs) -> Result<()> {
    let opts = OpenOptions {
        verify: true,
        ..OpenOptions::default()
    };
    let model = Model::open_with(&a.file, &opts)?;
    outln!(
        "{}: OK, {} tensors, all checksums match",
        a.file.display(),
        model.file().tensors.len()
    )?;
    Ok(())
}

/// Median of some timings, in seconds.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn bench(a: BenchArgs) -> Result<()> {
    if a.reps == 0 {
        return Err(Error::InvalidArgument(
            "--repetitions must be at least 1".into(),
        ));
    }
    let model = Arc::new(Model::open(&a.model)?);
    let hp = model.hparams();
    let n_ctx = (a.n_prompt.max(a.n_gen + 1)).max(1);
    let params = SessionParams {
        n_ctx,
        n_threads: a.threads,
        n_batch: a.n_prompt.clamp(1, 4096),
        ..SessionParams::default()
    };
    let mut session = new_session(&model, params, !a.no_mem_check)?;
    // Fixed, spread-out token ids: the speed does not depend on which tokens they are.
    let tokens: Vec<u32> = (0..n_ctx)
        .map(|i| ((i * 7919 + 13) % hp.n_vocab) as u32)
        .collect();

    // One untimed warm-up of each test (page faults, caches, thread start-up).
    let time_pp = |session: &mut Session| -> Result<f64> {
        session.reset();
        let t = Instant::now();
        session.eval(&tokens[..a.n_prompt])?;
        Ok(t.elapsed().as_secs_f64())
    };
    let mut pp = Vec::new();
    if a.n_prompt > 0 {
        time_pp(&mut session)?;
        for _ in 0..a.reps {
            pp.push(time_pp(&mut session)?);
        }
    }
    let time_tg = |session: &mut Session| -> Result<f64> {
        session.reset();
        let t = Instant::now();
        for &tok in &tokens[..a.n_gen] {
            session.eval(&[tok])?;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let mut tg = Vec::new();
    if a.n_gen > 0 {
        time_tg(&mut session)?;
        for _ in 0..a.reps {
            tg.push(time_tg(&mut session)?);
        }
    }

    let pp_tps = if pp.is_empty() {
        0.0
    } else {
        a.n_prompt as f64 / median(pp)
    };
    let tg_tps = if tg.is_empty() {
        0.0
    } else {
        a.n_gen as f64 / median(tg)
    };
    // Every matrix is read once per generated token (the embedding table only one row).
    let w = model.weights();
    let embd_row = w.token_embd.len / w.token_embd.rows;
    let per_token: usize = w
        .layers
        .iter()
        .flat_map(|l| [l.wq, l.wk, l.wv, l.wo, l.w_gate, l.w_up, l.w_down])
        .map(|t| t.len)
        .sum::<usize>()
        + w.output.len
        + embd_row;
    let gbps = tg_tps * per_token as f64 / 1e9;
    let name = a
        .model
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    if a.json {
        outln!(
            "{{\"model\": \"{}\", \"kernel\": \"{}\", \"threads\": {}, \"n_prompt\": {}, \"n_gen\": {}, \"repetitions\": {}, \"pp_tps\": {:.2}, \"tg_tps\": {:.2}, \"tg_weight_gbps\": {:.3}}}",
            name.replace('\\', "\\\\").replace('"', "\\\""),
            session.kernel_name(),
            session.n_threads(),
            a.n_prompt,
            a.n_gen,
            a.reps,
            pp_tps,
            tg_tps,
            gbps
        )?;
    } else {
        outln!("| model | kernel | threads | test | t/s | weights GB/s |")?;
        outln!("|---|---|---|---|---|---|")?;
        if a.n_prompt > 0 {
            outln!(
                "| {name} | {} | {} | pp{} | {pp_tps:.2} | |",
                session.kernel_name(),
                session.n_threads(),
                a.n_prompt
            )?;
        }
        if a.n_gen > 0 {
            outln!(
                "| {name} | {} | {} | tg{} | {tg_tps:.2} | {gbps:.2} |",
                session.kernel_name(),
                session.n_threads(),
                a.n_gen
            )?;
        }
    }
    Ok(())
}
