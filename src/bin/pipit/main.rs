//! `pipit`: run, inspect and measure quantized language models from the command line.
//!
//! Everything here is presentation: argument parsing (clap), printing, Ctrl-C. The work is
//! the library's: generation is [`Session::generate`], ranking is [`Session::choose`].

mod chat;
mod inspect;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use pipit::constraint::{Constraint, TokenMask};
use pipit::generate::GenerateOptions;
use pipit::model::{Model, OpenOptions};
use pipit::sampler::{Sampler, SamplerParams};
use pipit::session::{
    n_ctx_for_search, BeamParams, Hypothesis, MemoryReport, Precision, Session, SessionParams,
};
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
    /// Rank options as continuations of a prompt by log-probability, best first.
    Choose(ChooseArgs),
    /// Perplexity of a text file, following llama.cpp's protocol (comparable figures).
    Perplexity(PerplexityArgs),
    /// Show a model file: header, hyper-parameters, tokenizer, tensors and memory needs.
    Inspect(InspectArgs),
    /// Recompute every checksum of a model file.
    Verify(FileArgs),
    /// Measure prompt processing and generation speed (llama-bench's method).
    Bench(BenchArgs),
    /// Chat with an instruct model: its chat template, replies streamed, the conversation
    /// kept in the KV cache; one message per line from a pipe.
    Chat(chat::ChatArgs),
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
        self.session_with(model, n_ctx, 1)
    }

    /// A session that can run `n_seq_max` sequences side by side.
    fn session_with(&self, model: &Arc<Model>, n_ctx: usize, n_seq_max: usize) -> Result<Session> {
        let precision = if self.f32 {
            Precision::F32
        } else {
            Precision::Int8
        };
        let params = SessionParams {
            n_ctx,
            n_threads: self.threads,
            precision,
            n_seq_max,
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

/// Sampling flags shared by the generating commands; defaults are
/// [`SamplerParams::default`], the same as the C ABI's.
#[derive(Args)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy (argmax, penalties and filters ignored).
    #[arg(long = "temp", default_value_t = SamplerParams::default().temperature)]
    temperature: f32,
    /// Keep the k most likely tokens (0: off).
    #[arg(long, default_value_t = SamplerParams::default().top_k)]
    top_k: u32,
    /// Keep the smallest set of tokens whose probability reaches p (1: off).
    #[arg(long, default_value_t = SamplerParams::default().top_p)]
    top_p: f32,
    /// Drop tokens less likely than min-p times the most likely one (0: off).
    #[arg(long, default_value_t = SamplerParams::default().min_p)]
    min_p: f32,
    /// Penalty on tokens seen among the last --repeat-last-n (1: off).
    #[arg(long, default_value_t = SamplerParams::default().repeat_penalty)]
    repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    #[arg(long, default_value_t = SamplerParams::default().repeat_last_n)]
    repeat_last_n: u32,
    /// Seed of the random draw: the same seed gives the same text.
    #[arg(long, default_value_t = SamplerParams::default().seed)]
    seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplerParams {
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

/// Structured output: the generated text must follow one of these.
#[derive(Args)]
struct ConstraintArgs {
    /// The whole output matches this regular expression.
    #[arg(long, group = "constraint")]
    regex: Option<String>,
    /// The output is JSON valid against the JSON Schema in this file.
    #[arg(long, value_name = "FILE", group = "constraint")]
    json_schema: Option<PathBuf>,
    /// The output follows this GBNF grammar (llama.cpp syntax; start rule `root`).
    #[arg(long, value_name = "FILE", group = "constraint")]
    grammar: Option<PathBuf>,
    /// The output is exactly one of these '|'-separated strings (a leading space is part
    /// of a choice), drawn by the sampler under a mask over their tokens.
    #[arg(long, value_name = "A|B|C", group = "constraint")]
    choices: Option<String>,
}

impl ConstraintArgs {
    /// The compiled constraint, if one was asked for; `any_json` is `pipit run --json`.
    fn build(&self, model: &Model, any_json: bool) -> Result<Option<Arc<Constraint>>> {
        let file = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| Error::Io {
                path: p.display().to_string(),
                source: e,
            })
        };
        Ok(Some(
            match (&self.regex, &self.json_schema, &self.grammar, &self.choices) {
                (Some(r), ..) => Constraint::regex(model, r)?,
                (_, Some(f), ..) => Constraint::json_schema(model, &file(f)?)?,
                (_, _, Some(f), _) => Constraint::gbnf(model, &file(f)?)?,
                (.., Some(c)) => Constraint::choices(model, &c.split('|').collect::<Vec<_>>())?,
                _ if any_json => Constraint::json_schema(model, "")?,
                _ => return Ok(None),
            },
        ))
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
    #[arg(short = 'n', long = "n-predict", default_value_t = GenerateOptions::default().max_tokens)]
    n_predict: usize,
    /// Stop when the output ends with this text, which is not printed (repeatable).
    #[arg(long = "stop", value_name = "STRING")]
    stop: Vec<String>,
    /// Never sample end-of-text: generate exactly --n-predict tokens (unless the context
    /// fills or a stop string ends it).
    #[arg(long)]
    ignore_eos: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    beams: BeamArgs,
    #[command(flatten)]
    constraint: ConstraintArgs,
    /// The output is any JSON value (compact).
    #[arg(long, group = "constraint")]
    json: bool,
    /// Write the logits after the prompt (the next token's, raw little-endian f32) to FILE
    /// before generating: to compare runs bit for bit (tools/cross-isa-check.sh).
    #[arg(long, value_name = "FILE")]
    dump_logits: Option<PathBuf>,
}

/// Beam search flags of `run`.
#[derive(Args)]
struct BeamArgs {
    /// Beam search with B beams instead of sampling: the B most probable continuations are
    /// grown side by side (one batch per step) and the best by sum(log p) / length^A is
    /// printed. 1 is greedy. Deterministic; sampling flags and penalties do not apply.
    #[arg(long = "beams", value_name = "B")]
    beams: Option<usize>,
    /// A in the beam score sum(log p) / length^A (length counts the end-of-text token);
    /// 0 ranks by the plain sum, larger values favour longer hypotheses.
    #[arg(long, value_name = "A", default_value_t = 1.0, requires = "beams")]
    length_penalty: f32,
    /// Print every finished hypothesis, best first, with its score and log-probability.
    #[arg(long, requires = "beams")]
    beams_all: bool,
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
    /// Score the text as the continuation of this prompt; the prompt's own tokens are not
    /// counted.
    #[arg(short, long)]
    prompt: Option<String>,
}

#[derive(Args)]
struct ChooseArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt, evaluated once; every option is scored as its continuation.
    #[arg(short, long)]
    prompt: String,
    /// The options, separated by '|' (a leading space is part of an option).
    #[arg(long)]
    options: String,
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
    /// Also time a beam search of B beams over -n tokens after the -p prompt, against greedy
    /// decoding after the same prompt, and compare their memory (sessions sized for each).
    #[arg(long, value_name = "B")]
    beams: Option<usize>,
    /// Also measure generation under a constraint: compile time, mask time per step and
    /// tokens per second (sampled at temperature --temp, seed --seed).
    #[command(flatten)]
    constraint: ConstraintArgs,
    /// Sampling temperature of the constrained generation test.
    #[arg(long = "temp", default_value_t = 1.0)]
    temperature: f32,
    /// Seed of the constrained generation test.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compare the generation test's weight traffic with the memory's read bandwidth (its
    /// roofline). Alone, measures it with the same threads: the best of 5 reads of a 256 MiB
    /// buffer (a quarter of the available memory if that is less). With a figure, uses that
    /// one, in GB/s.
    #[arg(long, value_name = "GBPS", num_args = 0..=1, default_missing_value = "0")]
    roofline: Option<f64>,
}

#[derive(Args)]
struct FileArgs {
    /// The .pipit model file.
    file: PathBuf,
}

#[derive(Args)]
struct InspectArgs {
    /// The .pipit model file.
    file: PathBuf,
    /// Also show a session's memory at this context (repeatable; at most the trained one).
    #[arg(long = "ctx", value_name = "N_CTX")]
    ctx: Vec<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run(a),
        Command::Tokenize(a) => tokenize(a),
        Command::Score(a) => score(a),
        Command::Choose(a) => choose(a),
        Command::Perplexity(a) => perplexity(a),
        Command::Inspect(a) => inspect(a),
        Command::Verify(a) => verify(a),
        Command::Bench(a) => bench(a),
        Command::Chat(a) => chat::run(a),
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

/// Writes to stdout and flushes, naming stdout on failure (a closed pipe is an error, not
/// a panic).
pub fn out(w: &mut impl Write, bytes: &[u8]) -> Result<()> {
    w.write_all(bytes)
        .and_then(|()| w.flush())
        .map_err(|e| Error::Io {
            path: "stdout".into(),
            source: e,
        })
}

fn run(a: RunArgs) -> Result<()> {
    if a.beams.beams.is_some() {
        return run_beams(a);
    }
    let model = a.model.open()?;
    let prompt = prompt_ids(&model, &a.prompt)?;
    let mut session = a.model.session(&model, a.model.ctx)?;
    let opts = GenerateOptions {
        sampling: a.sampling.params(),
        max_tokens: a.n_predict,
        stop: &a.stop,
        ignore_eos: a.ignore_eos,
    };

    session.set_constraint(a.constraint.build(&model, a.json)?)?;

    let t0 = Instant::now();
    session.eval_prompt(&prompt)?;
    let prompt_secs = t0.elapsed().as_secs_f64();
    if let Some(path) = &a.dump_logits {
        let logits = session.logits().unwrap_or(&[]);
        let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
    }

    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    let mut write_err = None;
    let t1 = Instant::now();
    let reason = session.generate(&[], &opts, |piece, _| {
        write_err = out(&mut stdout, piece).err();
        write_err.is_some()
    });
    if let Some(e) = write_err {
        return Err(e);
    }
    let reason = reason?;
    out(&mut stdout, b"\n")?;
    let gen_secs = t1.elapsed().as_secs_f64();
    let generated = session.n_past() - prompt.len();
    eprintln!(
        "pipit: prompt {} tokens at {:.1} tok/s; generated {} tokens at {:.1} tok/s ({}); kernels {}, {} threads",
        prompt.len(),
        prompt.len() as f64 / prompt_secs,
        generated,
        generated as f64 / gen_secs.max(1e-9),
        reason.describe(),
        session.kernel_name(),
        session.n_threads()
    );
    Ok(())
}

/// The ids of a prompt that opens a context (BOS when the model wants one); an empty prompt
/// of a model without BOS is an error.
fn prompt_ids(model: &Model, text: &str) -> Result<Vec<u32>> {
    let tok = model.tokenizer();
    let mut ids = Vec::new();
    tok.encode(text, tok.add_bos(), &mut ids);
    if ids.is_empty() {
        return Err(Error::InvalidArgument(
            "the prompt is empty and the model adds no BOS".into(),
        ));
    }
    Ok(ids)
}

/// `pipit run --beams B`: the prompt, then a beam search; prints the best hypothesis (and
/// with --beams-all every finished one) and its log-probability.
fn run_beams(a: RunArgs) -> Result<()> {
    let model = a.model.open()?;
    let tok = model.tokenizer();
    let prompt = prompt_ids(&model, &a.prompt)?;
    let beams = a.beams.beams.unwrap_or(1);
    let params = BeamParams {
        beams,
        length_penalty: a.beams.length_penalty,
        max_tokens: a.n_predict,
        ignore_eos: a.ignore_eos,
    };
    // At least two sequences: a one-beam search needs the room of a second one for the
    // sliding windows of models that have them.
    let mut session = a.model.session_with(&model, a.model.ctx, beams.max(2))?;
    // Under a constraint every beam follows it, with a state of its own.
    session.set_constraint(a.constraint.build(&model, a.json)?)?;
    let t0 = Instant::now();
    let hyps = session.beam_search(&prompt, &params)?;
    let secs = t0.elapsed().as_secs_f64();
    let text = |h: &Hypothesis| -> Vec<u8> {
        h.tokens.iter().flat_map(|&t| tok.piece(t).iter().copied()).collect()
    };
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    if a.beams.beams_all {
        for (i, h) in hyps.iter().enumerate() {
            let head = format!(
                "#{} score {:.6} logprob {:.6} tokens {}{}: ",
                i + 1,
                h.score,
                h.logprob,
                h.tokens.len(),
                if h.ended { " +eos" } else { "" }
            );
            out(&mut stdout, head.as_bytes())?;
            out(&mut stdout, &text(h))?;
            out(&mut stdout, b"\n")?;
        }
    } else {
        out(&mut stdout, &text(&hyps[0]))?;
        out(&mut stdout, b"\n")?;
    }
    let best = &hyps[0];
    eprintln!(
        "pipit: beam search, {beams} beams, length penalty {}: best of {} hypotheses has {} tokens{}, logprob {:.6}, score {:.6}; {:.2} s; kernels {}, {} threads",
        params.length_penalty,
        hyps.len(),
        best.tokens.len(),
        if best.ended { " + end of text" } else { "" },
        best.logprob,
        best.score,
        secs,
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
    let mut prompt = Vec::new();
    if let Some(p) = &a.prompt {
        tok.encode(p, tok.add_bos(), &mut prompt);
        if prompt.is_empty() {
            return Err(Error::InvalidArgument(
                "the prompt is empty and the model adds no BOS".into(),
            ));
        }
    }
    // Without a prompt the text opens the context; its first token is given, not scored.
    let mut ids = Vec::new();
    tok.encode(&text, tok.add_bos() && prompt.is_empty(), &mut ids);
    let scored = if prompt.is_empty() {
        ids.len().saturating_sub(1)
    } else {
        ids.len()
    };
    if scored == 0 {
        return Err(Error::InvalidArgument(format!(
            "the text has {} token(s); nothing to score",
            ids.len()
        )));
    }
    let mut session = a.model.session(&model, prompt.len() + ids.len())?;
    if !prompt.is_empty() {
        session.eval(&prompt)?;
    }
    let total_nll = -session.score(&ids)?;
    outln!(
        "tokens={} total_nll={:.6} mean_nll={:.6}",
        ids.len(),
        total_nll,
        total_nll / scored as f64
    )?;
    Ok(())
}

fn choose(a: ChooseArgs) -> Result<()> {
    let model = a.model.open()?;
    let tok = model.tokenizer();
    let prompt = prompt_ids(&model, &a.prompt)?;
    let texts: Vec<&str> = a.options.split('|').collect();
    let options: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            let mut ids = Vec::new();
            tok.encode(t, false, &mut ids);
            ids
        })
        .collect();
    if let Some(i) = options.iter().position(Vec::is_empty) {
        return Err(Error::InvalidArgument(format!(
            "option {} ({:?}) is empty",
            i + 1,
            texts[i]
        )));
    }
    let longest = options.iter().map(Vec::len).max().unwrap_or(0);
    let mut session = a.model.session(&model, prompt.len() + longest)?;
    let mut logprobs = vec![0.0; options.len()];
    session.choose(&prompt, &options, &mut logprobs)?;
    // Best first; ties keep the given order.
    let mut order: Vec<usize> = (0..options.len()).collect();
    order.sort_by(|&i, &j| logprobs[j].total_cmp(&logprobs[i]));
    for i in order {
        let (n, lp) = (options[i].len(), logprobs[i]);
        outln!(
            "{:?}\ttokens={n}\tlogprob={lp:.6}\tper_token={:.6}\tper_byte={:.6}",
            texts[i],
            lp / n as f64,
            lp / texts[i].len() as f64
        )?;
    }
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

fn inspect(a: InspectArgs) -> Result<()> {
    let t0 = Instant::now();
    let model = Model::open(&a.file)?;
    let n_ctx_train = model.hparams().n_ctx_train;
    if let Some(&n) = a.ctx.iter().find(|&&n| n == 0 || n > n_ctx_train) {
        return Err(Error::InvalidArgument(format!(
            "--ctx {n}: must be in 1..={n_ctx_train} (the context this model was trained for)"
        )));
    }
    let report = inspect::report(&model, pipit::session::kernel_path()?, &a.ctx);
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
    if let Some(g) = a.roofline {
        if !(g >= 0.0 && g.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "--roofline {g}: must be a bandwidth in GB/s (or nothing, to measure it)"
            )));
        }
    }
    let model = Arc::new(Model::open(&a.model)?);
    let hp = model.hparams();
    let with_constraint = a.constraint.regex.is_some()
        || a.constraint.json_schema.is_some()
        || a.constraint.grammar.is_some();
    let n_ctx = (a.n_prompt.max(a.n_gen + 1)).max(1)
        + if with_constraint {
            CONSTRAINED_PROMPT
        } else {
            0
        };
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

    let constrained = if with_constraint && a.n_gen > 0 {
        Some(bench_constraint(&a, &model, &mut session, &tokens)?)
    } else {
        None
    };

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
    let roofline = match a.roofline {
        None => None,
        Some(g) if g > 0.0 => Some((g, "given")),
        Some(_) => {
            let quarter = |m: u64| usize::try_from(m / 4).unwrap_or(usize::MAX);
            let bytes = pipit::session::available_memory()
                .map_or(ROOFLINE_BYTES, |m| ROOFLINE_BYTES.min(quarter(m)));
            Some((session.read_bandwidth(bytes, 5)?, "measured"))
        }
    };
    let beam = match a.beams {
        Some(b) => Some(bench_beams(&a, &model, &tokens, b)?),
        None => None,
    };
    let name = a
        .model
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let extra = constrained.as_ref().map_or_else(String::new, |c| {
        format!(
            ", \"compile_ms\": {:.3}, \"vocab_index_ms\": {:.3}, \"mask_us_p50\": {:.2}, \"mask_us_p99\": {:.2}, \"mask_us_max\": {:.2}, \"constrained_steps\": {}, \"constrained_outputs\": {}, \"constrained_tg_tps\": {:.2}, \"sampled_tg_tps\": {:.2}, \"constrained_tg_ratio\": {:.3}",
            c.compile_ms,
            c.vocab_ms,
            c.p50,
            c.p99,
            c.max,
            c.steps,
            c.outputs,
            c.tg_tps,
            c.sampled_tg_tps,
            c.tg_tps / c.sampled_tg_tps
        )
    });
    if a.json {
        outln!(
            "{{\"model\": \"{}\", \"kernel\": \"{}\", \"threads\": {}, \"n_prompt\": {}, \"n_gen\": {}, \"repetitions\": {}, \"pp_tps\": {:.2}, \"tg_tps\": {:.2}, \"tg_weight_gbps\": {:.3}, \"n_ctx\": {}, \"kv_cache_bytes\": {}{extra}{}}}",
            name.replace('\\', "\\\\").replace('"', "\\\""),
            session.kernel_name(),
            session.n_threads(),
            a.n_prompt,
            a.n_gen,
            a.reps,
            pp_tps,
            tg_tps,
            gbps,
            n_ctx,
            session.kv_cache_bytes(),
            beam.as_ref().map_or_else(String::new, BeamBench::json)
                + &roofline.map_or_else(String::new, |(r, how)| format!(
                    ", \"roofline_gbps\": {r:.3}, \"roofline\": \"{how}\", \"tg_roofline_pct\": {:.1}",
                    100.0 * gbps / r
                ))
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
        if let Some((r, how)) = roofline {
            outln!(
                "roofline: memory reads {r:.2} GB/s ({how}); generation reads its weights at {:.1}% of it",
                100.0 * gbps / r
            )?;
        }
        if let Some(b) = &beam {
            outln!("{}", b.table(&name))?;
        }
        outln!(
            "session: n_ctx {n_ctx}, KV cache ({:?}) {} bytes",
            session.params().kv_type,
            session.kv_cache_bytes()
        )?;
        if let Some(c) = &constrained {
            outln!(
                "| {name} | {} | {} | tg{} constrained | {:.2} | |",
                session.kernel_name(),
                session.n_threads(),
                a.n_gen,
                c.tg_tps
            )?;
            outln!(
                "constraint: compile {:.3} ms (vocabulary index {:.3} ms); mask p50 {:.2} us, p99 {:.2} us, max {:.2} us over {} steps, {} outputs",
                c.compile_ms, c.vocab_ms, c.p50, c.p99, c.max, c.steps, c.outputs
            )?;
        }
    }
    Ok(())
}

/// The buffer `bench --roofline` reads: far past the last-level caches of the CPUs pipit
/// targets (32 MiB on a Zen 5 CCD, 2 MiB or less on a Raspberry Pi).
const ROOFLINE_BYTES: usize = 256 << 20;

/// What `bench --beams` measures.
struct BeamBench {
    beams: usize,
    /// Median seconds per step of greedy decoding after the prompt (one eval per token).
    greedy_step: f64,
    /// Median seconds per step of the beam search (its whole run over n_gen steps).
    beam_step: f64,
    /// KV cache + scratch of a session sized for greedy and for the search.
    greedy_bytes: u64,
    beam_bytes: u64,
}

impl BeamBench {
    fn json(&self) -> String {
        format!(
            ", \"beams\": {}, \"greedy_step_ms\": {:.4}, \"beam_step_ms\": {:.4}, \"beam_step_ratio\": {:.3}, \"greedy_session_bytes\": {}, \"beam_session_bytes\": {}, \"beam_memory_ratio\": {:.3}",
            self.beams,
            self.greedy_step * 1e3,
            self.beam_step * 1e3,
            self.beam_step / self.greedy_step,
            self.greedy_bytes,
            self.beam_bytes,
            self.beam_bytes as f64 / self.greedy_bytes as f64
        )
    }

    fn table(&self, name: &str) -> String {
        format!(
            "\n| model | beams | greedy step ms | beam step ms | ratio | greedy KV+scratch | beam KV+scratch | ratio |\n|---|---|---|---|---|---|---|---|\n| {name} | {} | {:.3} | {:.3} | {:.2}x | {} | {} | {:.2}x |",
            self.beams,
            self.greedy_step * 1e3,
            self.beam_step * 1e3,
            self.beam_step / self.greedy_step,
            self.greedy_bytes,
            self.beam_bytes,
            self.beam_bytes as f64 / self.greedy_bytes as f64
        )
    }
}

/// Times greedy decoding and a `beams`-wide beam search of n_gen tokens after the same
/// n_prompt-token prompt, each in a session sized for it.
fn bench_beams(a: &BenchArgs, model: &Arc<Model>, tokens: &[u32], beams: usize) -> Result<BeamBench> {
    if a.n_prompt == 0 || a.n_gen == 0 {
        return Err(Error::InvalidArgument(
            "--beams needs a prompt (-p) and tokens to generate (-n)".into(),
        ));
    }
    let prompt: Vec<u32> = tokens.iter().copied().cycle().take(a.n_prompt).collect();
    let sized = |n_ctx: usize, n_seq_max: usize| SessionParams {
        n_ctx,
        n_threads: a.threads,
        n_seq_max,
        ..SessionParams::default()
    };
    let greedy_params = sized(a.n_prompt + a.n_gen, 1);
    let n_ctx = n_ctx_for_search(a.n_prompt, a.n_gen, beams);
    let beam_params = sized(n_ctx.min(model.hparams().n_ctx_train), beams);
    let mut greedy = Session::new(Arc::clone(model), greedy_params)?;
    let mut search = Session::new(Arc::clone(model), beam_params)?;
    let cost = |p: &SessionParams| -> Result<u64> {
        let m = MemoryReport::estimate(model, p)?;
        Ok(m.kv_cache + m.scratch)
    };
    let params = BeamParams {
        beams,
        length_penalty: 1.0,
        max_tokens: a.n_gen,
        ignore_eos: true,
    };
    let mut time_greedy = || -> Result<f64> {
        greedy.reset();
        greedy.eval(&prompt)?;
        let t = Instant::now();
        for _ in 0..a.n_gen {
            let next = pipit::sampler::argmax(greedy.logits().unwrap_or(&[0.0]));
            greedy.eval(&[next])?;
        }
        Ok(t.elapsed().as_secs_f64() / a.n_gen as f64)
    };
    let mut time_beams = || -> Result<f64> {
        search.reset();
        search.eval(&prompt)?;
        let t = Instant::now();
        search.beam_search(&[], &params)?;
        Ok(t.elapsed().as_secs_f64() / a.n_gen as f64)
    };
    let (mut g, mut b) = (Vec::new(), Vec::new());
    time_greedy()?;
    time_beams()?;
    for _ in 0..a.reps {
        g.push(time_greedy()?);
        b.push(time_beams()?);
    }
    Ok(BeamBench {
        beams,
        greedy_step: median(g),
        beam_step: median(b),
        greedy_bytes: cost(&greedy_params)?,
        beam_bytes: cost(&beam_params)?,
    })
}

/// Prompt length of the constrained generation test.
const CONSTRAINED_PROMPT: usize = 8;

/// Figures of the constrained generation test.
struct ConstrainedBench {
    compile_ms: f64,
    vocab_ms: f64,
    p50: f64,
    p99: f64,
    max: f64,
    steps: usize,
    outputs: usize,
    tg_tps: f64,
    /// The same sampled generation without the constraint.
    sampled_tg_tps: f64,
}

/// Generates `--n-gen` tokens per repetition under the constraint (sampled; a new output
/// starts whenever one completes), timing the mask (computing it, and advancing the state)
/// separately from the whole step.
fn bench_constraint(
    a: &BenchArgs,
    model: &Arc<Model>,
    session: &mut Session,
    tokens: &[u32],
) -> Result<ConstrainedBench> {
    let t = Instant::now();
    model.vocab_index();
    let vocab_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let c = a
        .constraint
        .build(model, false)?
        .ok_or_else(|| Error::Internal("no constraint".into()))?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let params = SamplerParams {
        temperature: a.temperature,
        seed: a.seed,
        ..SamplerParams::default()
    };
    let mut sampler = Sampler::new(params, model.hparams().n_vocab)?;
    let mut mask = TokenMask::new();
    let mut st = c.start();
    let mut mask_us = Vec::with_capacity((a.reps + 1) * a.n_gen);
    let mut times = Vec::new();
    let mut outputs = 0;
    let mut plain_times = Vec::new();
    let prompt = &tokens[..CONSTRAINED_PROMPT.min(tokens.len())];
    for rep in 0..=a.reps {
        // The same loop without the constraint, right before: the ratio compares like
        // with like on a machine whose load varies.
        session.reset();
        session.eval(prompt)?;
        let mut plain = Sampler::new(params, model.hparams().n_vocab)?;
        let t0 = Instant::now();
        for _ in 0..a.n_gen {
            let logits = session
                .logits()
                .ok_or_else(|| Error::Internal("no logits".into()))?;
            let next = plain.sample(logits, session.tokens())?;
            session.eval(&[next])?;
        }
        if rep > 0 {
            plain_times.push(t0.elapsed().as_secs_f64());
        }
        session.reset();
        session.eval(prompt)?;
        c.restart(&mut st);
        let t0 = Instant::now();
        for _ in 0..a.n_gen {
            let t = Instant::now();
            c.mask(&st, None, &mut mask);
            let mask_time = t.elapsed();
            let logits = session
                .logits()
                .ok_or_else(|| Error::Internal("no logits".into()))?;
            let next = sampler.sample_masked(logits, session.tokens(), Some(mask.allowed_tokens()))?;
            let t = Instant::now();
            let ended = model.tokenizer().is_eog(next);
            if !ended {
                c.advance(&mut st, next)?;
            }
            let advance_time = t.elapsed();
            if rep > 0 {
                mask_us.push((mask_time + advance_time).as_secs_f64() * 1e6);
            }
            if ended {
                // One output is complete: the next starts from the constraint's start.
                outputs += usize::from(rep > 0);
                c.restart(&mut st);
                let nl = tokens[0];
                session.eval(&[nl])?;
            } else {
                session.eval(&[next])?;
            }
        }
        if rep > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    mask_us.sort_by(f64::total_cmp);
    let pct = |q: f64| mask_us[((mask_us.len() - 1) as f64 * q).round() as usize];
    Ok(ConstrainedBench {
        compile_ms,
        vocab_ms,
        p50: pct(0.5),
        p99: pct(0.99),
        max: mask_us.last().copied().unwrap_or(0.0),
        steps: mask_us.len(),
        outputs,
        tg_tps: a.n_gen as f64 / median(times),
        sampled_tg_tps: a.n_gen as f64 / median(plain_times),
    })
}
