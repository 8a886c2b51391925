//! `pipit chat`: an interactive conversation with an instruct model.
//!
//! The conversation stays in the KV cache, so each turn only evaluates its own tokens; when
//! the context fills, the oldest turns are dropped (the kept ones re-evaluated) or the
//! conversation is reset, as `--on-full` says. Replies come from the library's generation
//! loop ([`Session::generate`]), the same as `pipit run` and `pipit_generate`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::builder::PossibleValuesParser;
use clap::{Args, ValueEnum};

use pipit::chat::Template;
use pipit::generate::{GenerateOptions, StopReason};
use pipit::model::{Model, OpenOptions};
use pipit::session::{Session, SessionParams};
use pipit::{Error, Result};

use crate::{out, SamplingArgs};

/// What to do when the next turn does not fit in the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnFull {
    /// Drop the oldest turns and re-evaluate the kept ones.
    Drop,
    /// Start the conversation over (the system message stays).
    Reset,
}

/// `pipit chat` arguments.
#[derive(Args)]
pub struct ChatArgs {
    /// The .pipit model file.
    #[arg(short, long)]
    pub model: PathBuf,
    /// System message (default: the template's own, if it has one).
    #[arg(long)]
    pub system: Option<String>,
    /// Chat template, when the file has none or an unknown one.
    #[arg(long, value_parser = PossibleValuesParser::new(Template::NAMES))]
    pub template: Option<String>,
    /// Context window in tokens (default: 2048, or less if the model was trained for less).
    #[arg(long = "ctx")]
    pub ctx: Option<usize>,
    /// Threads for the matrix work (default: all cores).
    #[arg(short, long, default_value_t = 0)]
    pub threads: usize,
    /// Most tokens per reply (0: until the end of the reply or of the context).
    #[arg(short = 'n', long = "n-predict", default_value_t = 0)]
    pub n_predict: u32,
    /// When the context is full: drop the oldest turns, or reset the conversation.
    #[arg(long, value_enum, default_value_t = OnFull::Drop)]
    pub on_full: OnFull,
    /// Read the file into memory instead of mapping it.
    #[arg(long)]
    pub no_mmap: bool,
    /// Skip the check of the session's memory against the machine's available memory.
    #[arg(long)]
    pub no_mem_check: bool,
    /// Stop the reply when it ends with this text (not printed; repeatable).
    #[arg(long = "stop", value_name = "STRING")]
    pub stop: Vec<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Ctrl-C: stops the reply being generated, or ends the program at the prompt.
#[cfg(unix)]
mod sigint {
    use std::ffi::c_int;
    use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
    use std::sync::Arc;

    const SIGINT: c_int = 2;

    /// A reply (or a prompt evaluation) is running.
    static GENERATING: AtomicBool = AtomicBool::new(false);
    /// The session's cancel flag; kept alive by [`Handler`].
    static CANCEL: AtomicPtr<AtomicBool> = AtomicPtr::new(std::ptr::null_mut());

    extern "C" {
        /// libc's `signal(2)`; the handler is passed and returned as an address.
        fn signal(signum: c_int, handler: usize) -> usize;
        /// libc's `_exit(2)`, async-signal-safe.
        fn _exit(status: c_int) -> !;
    }

    extern "C" fn on_sigint(_: c_int) {
        if GENERATING.load(Ordering::SeqCst) {
            let flag = CANCEL.load(Ordering::SeqCst);
            // SAFETY: a non-NULL pointer comes from the Arc a live `Handler` holds; an atomic
            // store is async-signal-safe.
            if let Some(flag) = unsafe { flag.as_ref() } {
                flag.store(true, Ordering::SeqCst);
            }
        } else {
            // SAFETY: `_exit` is async-signal-safe and takes any status.
            unsafe { _exit(130) }
        }
    }

    /// The installed handler; it routes Ctrl-C to `cancel` while [`Handler::generating`].
    pub struct Handler {
        cancel: Arc<AtomicBool>,
    }

    impl Handler {
        pub fn install(cancel: Arc<AtomicBool>) -> Handler {
            CANCEL.store(Arc::as_ptr(&cancel).cast_mut(), Ordering::SeqCst);
            // SAFETY: `on_sigint` is an `extern "C" fn(c_int)` that only touches atomics and
            // calls `_exit`, as a signal handler must.
            unsafe { signal(SIGINT, on_sigint as extern "C" fn(c_int) as usize) };
            Handler { cancel }
        }

        /// Runs `f` with Ctrl-C cancelling it; a late Ctrl-C does not reach the next call.
        pub fn generating<T>(&self, f: impl FnOnce() -> T) -> T {
            GENERATING.store(true, Ordering::SeqCst);
            let r = f();
            GENERATING.store(false, Ordering::SeqCst);
            self.cancel.store(false, Ordering::SeqCst);
            r
        }
    }

    impl Drop for Handler {
        fn drop(&mut self) {
            CANCEL.store(std::ptr::null_mut(), Ordering::SeqCst);
        }
    }
}

/// Without a Unix `signal()`, Ctrl-C keeps its default action.
#[cfg(not(unix))]
mod sigint {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    pub struct Handler;

    impl Handler {
        pub fn install(_cancel: Arc<AtomicBool>) -> Handler {
            Handler
        }

        pub fn generating<T>(&self, f: impl FnOnce() -> T) -> T {
            f()
        }
    }
}

/// A conversation: the session plus the turns it holds, for re-evaluation.
struct Chat<'a> {
    session: Session,
    template: Template,
    args: &'a ChatArgs,
    /// Earlier `(user, reply)` turns in the context, oldest first.
    turns: Vec<(String, String)>,
    /// The context does not end where the next turn can start (a reply's end marker did
    /// not fit): the next turn rebuilds it.
    broken: bool,
    sigint: sigint::Handler,
}

impl Chat<'_> {
    fn system(&self) -> Option<&str> {
        self.args.system.as_deref()
    }

    fn n_ctx(&self) -> usize {
        self.session.params().n_ctx
    }

    /// Tokens to keep free for a reply when fitting a turn in.
    fn reserve(&self) -> usize {
        let quarter = (self.n_ctx() / 4).max(1);
        match self.args.n_predict {
            0 => quarter,
            n => (n as usize).min(self.n_ctx() / 2).max(1),
        }
    }

    fn encode(&self, text: &str, at_start: bool) -> Vec<u32> {
        let tok = self.session.model().tokenizer();
        let mut ids = Vec::new();
        tok.encode(text, tok.add_bos() && at_start, &mut ids);
        ids
    }

    /// Forgets the conversation.
    fn reset(&mut self) {
        self.session.reset();
        self.turns.clear();
        self.broken = false;
    }

    /// The tokens that bring the context to the start of the reply to `user`, after
    /// dropping turns or resetting if they do not fit; `None` when the message alone is too
    /// long.
    fn prepare(&mut self, user: &str) -> Option<Vec<u32>> {
        let n_ctx = self.n_ctx();
        if !self.broken {
            let first = self.session.n_past() == 0;
            let text = self.template.user_turn(self.system(), first, user);
            let ids = self.encode(&text, first);
            if self.session.n_past() + ids.len() + self.reserve() <= n_ctx {
                return Some(ids);
            }
        }
        let keep_from = match self.args.on_full {
            OnFull::Reset => self.turns.len(),
            OnFull::Drop => (0..=self.turns.len())
                .find(|&k| {
                    let text = self.template.render(self.system(), &self.turns[k..], user);
                    self.encode(&text, true).len() + self.reserve() <= n_ctx
                })
                .unwrap_or(self.turns.len()),
        };
        let ids = self.encode(
            &self
                .template
                .render(self.system(), &self.turns[keep_from..], user),
            true,
        );
        if ids.len() >= n_ctx {
            eprintln!(
                "[the message needs {} tokens with the system message; the context holds {n_ctx}: not sent]",
                ids.len()
            );
            return None;
        }
        match self.args.on_full {
            OnFull::Reset => eprintln!("[context full ({n_ctx} tokens): conversation reset]"),
            OnFull::Drop => eprintln!(
                "[context full ({n_ctx} tokens): dropped the {keep_from} oldest turn(s), re-evaluating {} kept]",
                self.turns.len() - keep_from
            ),
        }
        self.session.reset();
        self.turns.drain(..keep_from);
        self.broken = false;
        Some(ids)
    }

    /// One exchange: the user's message in, the streamed reply out.
    fn turn(&mut self, user: &str, stdout: &mut impl Write) -> Result<()> {
        let Some(ids) = self.prepare(user) else {
            return Ok(());
        };
        let t0 = Instant::now();
        let sigint = &self.sigint;
        let session = &mut self.session;
        match sigint.generating(|| session.eval(&ids)) {
            Ok(()) => {}
            Err(Error::Cancelled) => {
                eprintln!("[stopped]");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let prompt_secs = t0.elapsed().as_secs_f64();

        let n_before = self.session.n_past();
        let mut reply = Vec::new();
        let mut write_err = None;
        let t1 = Instant::now();
        let opts = GenerateOptions {
            sampling: self.args.sampling.params(),
            max_tokens: match self.args.n_predict {
                0 => usize::MAX,
                n => n as usize,
            },
            stop: &self.args.stop,
            ignore_eos: false,
        };
        let session = &mut self.session;
        let result = sigint.generating(|| {
            session.generate(&[], &opts, |piece, _| {
                reply.extend_from_slice(piece);
                write_err = out(stdout, piece).err();
                write_err.is_some()
            })
        });
        if let Some(e) = write_err {
            return Err(e);
        }
        let n_gen = self.session.n_past() - n_before;
        let gen_secs = t1.elapsed().as_secs_f64();
        out(stdout, b"\n")?;
        let note = match result {
            Ok(StopReason::EndOfText | StopReason::Callback | StopReason::StopString) => "",
            Ok(StopReason::MaxTokens) => ", cut at --n-predict",
            Ok(StopReason::ContextFull) => ", cut: the context is full",
            Err(Error::Cancelled) => ", stopped",
            Err(e) => return Err(e),
        };
        eprintln!(
            "[prompt {} tokens at {:.1} tok/s; reply {n_gen} tokens at {:.1} tok/s{note}; context {}/{}]",
            ids.len(),
            ids.len() as f64 / prompt_secs.max(1e-9),
            n_gen as f64 / gen_secs.max(1e-9),
            self.session.n_past(),
            self.n_ctx()
        );
        self.turns.push((
            user.trim().to_string(),
            String::from_utf8_lossy(&reply).into_owned(),
        ));
        let end = self.encode(self.template.end_of_reply(), false);
        match self.session.eval(&end) {
            Ok(()) => {}
            Err(Error::ContextFull { .. } | Error::Cancelled) => self.broken = true,
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// Runs `pipit chat`: reads messages from stdin (a prompt is shown on a terminal), streams
/// replies to stdout and statistics to stderr.
pub fn run(args: ChatArgs) -> Result<()> {
    let opts = OpenOptions {
        mmap: !args.no_mmap,
        ..OpenOptions::default()
    };
    let model = Arc::new(Model::open_with(&args.model, &opts)?);
    let template = match &args.template {
        Some(name) => Template::named(name)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown template {name}")))?,
        None => Template::from_model(&model)?,
    };
    args.sampling.params().validate()?;
    let n_ctx = args.ctx.unwrap_or(
        SessionParams::default()
            .n_ctx
            .min(model.hparams().n_ctx_train),
    );
    let params = SessionParams {
        n_ctx,
        n_threads: args.threads,
        ..SessionParams::default()
    };
    if !args.no_mem_check {
        pipit::session::check_memory(&model, &params, pipit::session::available_memory())?;
    }
    let session = Session::new(Arc::clone(&model), params)?;
    let sigint = sigint::Handler::install(session.cancel_handle());
    let mut chat = Chat {
        session,
        template,
        args: &args,
        turns: Vec::new(),
        broken: false,
        sigint,
    };

    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    eprintln!(
        "pipit chat: {} template, context {} tokens, {} threads. /reset clears, /quit exits{}.",
        chat.template.name(),
        chat.n_ctx(),
        chat.session.n_threads(),
        if interactive {
            ", Ctrl-C stops a reply"
        } else {
            ""
        }
    );
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    let mut stdin = stdin.lock();
    let mut line = String::new();
    loop {
        if interactive {
            eprint!("> ");
        }
        line.clear();
        let n = stdin.read_line(&mut line).map_err(|e| Error::Io {
            path: "stdin".into(),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        match line.trim() {
            "" => {}
            "/quit" | "/exit" => break,
            "/reset" => {
                chat.reset();
                eprintln!("[conversation cleared]");
            }
            msg => chat.turn(msg, &mut stdout)?,
        }
    }
    Ok(())
}
