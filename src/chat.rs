//! `pipit chat`: an interactive conversation with an instruct model.
//!
//! The chat template is recognised from the Jinja text the model file keeps under
//! `tokenizer.chat_template` and rendered natively; the template is never executed. Three
//! families are known: ChatML (SmolLM2, Qwen), Gemma's turns and Llama 3's headers. The
//! conversation stays in the KV cache, so each turn only evaluates its own tokens; when the
//! context fills, the oldest turns are dropped (the kept ones re-evaluated) or the
//! conversation is reset, as `--on-full` says.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};

use crate::ffi::{generate, Stop};
use crate::model::{Model, OpenOptions};
use crate::sampler::SamplerParams;
use crate::session::{Session, SessionParams};
use crate::{Error, Result};

/// A chat template family, rendered natively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    /// `<|im_start|>role\n...<|im_end|>\n` (SmolLM2, Qwen).
    ChatMl {
        /// The system message the template inserts when the conversation has none.
        default_system: Option<String>,
    },
    /// `<start_of_turn>user\n...<end_of_turn>\n<start_of_turn>model\n`; a system message
    /// opens the first user turn.
    Gemma,
    /// `<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>`.
    Llama3,
}

/// Template names for `--template`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TemplateName {
    /// ChatML (SmolLM2, Qwen).
    Chatml,
    /// Gemma's turns.
    Gemma,
    /// Llama 3's headers.
    Llama3,
}

impl Template {
    /// The family of a Jinja chat template, from the markers its text contains.
    pub fn detect(jinja: &str) -> Option<Template> {
        if jinja.contains("<|start_header_id|>") {
            Some(Template::Llama3)
        } else if jinja.contains("<start_of_turn>") {
            Some(Template::Gemma)
        } else if jinja.contains("<|im_start|>") {
            Some(Template::ChatMl {
                default_system: chatml_default_system(jinja),
            })
        } else {
            None
        }
    }

    /// The template a name asks for.
    pub fn named(name: TemplateName) -> Template {
        match name {
            TemplateName::Chatml => Template::ChatMl {
                default_system: None,
            },
            TemplateName::Gemma => Template::Gemma,
            TemplateName::Llama3 => Template::Llama3,
        }
    }

    /// The template stored in the model file.
    pub fn from_model(model: &Model) -> Result<Template> {
        let Some(jinja) = model.file().metadata.opt_str("tokenizer.chat_template")? else {
            return Err(Error::Unsupported(
                "the model file has no tokenizer.chat_template; choose one with --template".into(),
            ));
        };
        Template::detect(jinja).ok_or_else(|| {
            Error::Unsupported(
                "the model's chat template is none of ChatML, Gemma or Llama 3; choose one with --template".into(),
            )
        })
    }

    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Template::ChatMl { .. } => "ChatML",
            Template::Gemma => "Gemma",
            Template::Llama3 => "Llama 3",
        }
    }

    /// The text of one user turn up to the start of the reply. `first` opens the
    /// conversation (and carries the system message).
    pub fn user_turn(&self, system: Option<&str>, first: bool, user: &str) -> String {
        let user = user.trim();
        match self {
            Template::ChatMl { default_system } => {
                let mut s = String::new();
                if first {
                    if let Some(sys) = system.or(default_system.as_deref()) {
                        s += &format!("<|im_start|>system\n{sys}<|im_end|>\n");
                    }
                }
                s + &format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
            }
            Template::Gemma => match system.filter(|_| first) {
                Some(sys) => format!(
                    "<start_of_turn>user\n{}\n\n{user}<end_of_turn>\n<start_of_turn>model\n",
                    sys.trim()
                ),
                None => format!("<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"),
            },
            Template::Llama3 => {
                let mut s = String::new();
                if let Some(sys) = system.filter(|_| first) {
                    s += &format!(
                        "<|start_header_id|>system<|end_header_id|>\n\n{}<|eot_id|>",
                        sys.trim()
                    );
                }
                s + &format!(
                    "<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
                )
            }
        }
    }

    /// What closes a reply (the end-of-turn token itself is not evaluated when sampled).
    pub fn end_of_reply(&self) -> &'static str {
        match self {
            Template::ChatMl { .. } => "<|im_end|>\n",
            Template::Gemma => "<end_of_turn>\n",
            Template::Llama3 => "<|eot_id|>",
        }
    }

    /// The whole conversation: earlier `(user, reply)` turns, then the new user turn.
    pub fn render(&self, system: Option<&str>, turns: &[(String, String)], user: &str) -> String {
        let mut s = String::new();
        for (i, (u, r)) in turns.iter().enumerate() {
            s += &self.user_turn(system, i == 0, u);
            s += r;
            s += self.end_of_reply();
        }
        s + &self.user_turn(system, turns.is_empty(), user)
    }
}

/// The literal system message a ChatML template inserts when none is given, such as
/// SmolLM2's `'<|im_start|>system\nYou are a helpful AI assistant ...<|im_end|>\n'`.
fn chatml_default_system(jinja: &str) -> Option<String> {
    let start = "<|im_start|>system";
    let at = jinja.find(start)? + start.len();
    let rest = &jinja[at..];
    // The role line ends with a newline, written either as a real one or as `\n`.
    let rest = rest
        .strip_prefix('\n')
        .or_else(|| rest.strip_prefix("\\n"))?;
    let end = rest.find("<|im_end|>")?;
    let text = rest[..end].replace("\\n", "\n");
    // Template code (a variable, a tag) is not a literal message.
    if text.is_empty()
        || text.contains("{{")
        || text.contains("{%")
        || text.contains('\'')
        || text.contains('"')
    {
        return None;
    }
    Some(text)
}

/// What to do when the next turn does not fit in the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnFull {
    /// Drop the oldest turns and re-evaluate the kept ones.
    Drop,
    /// Start the conversation over (the system message stays).
    Reset,
}

/// `pipit chat` arguments.
#[derive(Args, Debug)]
pub struct ChatArgs {
    /// The .pipit model file.
    #[arg(short, long)]
    pub model: PathBuf,
    /// System message (default: the template's own, if it has one).
    #[arg(long)]
    pub system: Option<String>,
    /// Chat template, when the file has none or an unknown one.
    #[arg(long, value_enum)]
    pub template: Option<TemplateName>,
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
    /// Temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0: off).
    #[arg(long, default_value_t = 40)]
    pub top_k: u32,
    /// Keep the smallest set of tokens whose probability reaches p (1: off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than min-p times the most likely one (0: off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalty on tokens seen among the last --repeat-last-n (1: off).
    #[arg(long, default_value_t = 1.1)]
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: u32,
    /// Seed of the random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl ChatArgs {
    fn sampler_params(&self) -> SamplerParams {
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
    sampler: SamplerParams,
    /// Earlier `(user, reply)` turns in the context, oldest first.
    turns: Vec<(String, String)>,
    /// The context does not end where the next turn can start (a reply's end marker did
    /// not fit): the next turn rebuilds it.
    broken: bool,
    sigint: sigint::Handler,
}

/// Writes and flushes, naming stdout on failure.
fn out(w: &mut impl Write, bytes: &[u8]) -> Result<()> {
    w.write_all(bytes)
        .and_then(|()| w.flush())
        .map_err(|e| Error::Io {
            path: "stdout".into(),
            source: e,
        })
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
        let (params, n_predict) = (self.sampler, self.args.n_predict);
        let max = if n_predict == 0 { u32::MAX } else { n_predict };
        let session = &mut self.session;
        let result = sigint.generating(|| {
            generate(session, &[], params, max, |piece, _| {
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
            Ok(Stop::EndOfText) => "",
            Ok(Stop::MaxTokens) => ", cut at --n-predict",
            Ok(Stop::Callback) => "",
            Err(Error::Cancelled) => ", stopped",
            Err(Error::ContextFull { .. }) => ", cut: the context is full",
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
    let template = match args.template {
        Some(name) => Template::named(name),
        None => Template::from_model(&model)?,
    };
    let sampler = args.sampler_params();
    sampler.validate()?;
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
        crate::session::check_memory(&model, &params, crate::session::available_memory())?;
    }
    let session = Session::new(Arc::clone(&model), params)?;
    let sigint = sigint::Handler::install(session.cancel_handle());
    let mut chat = Chat {
        session,
        template,
        args: &args,
        sampler,
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

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_renders_as_its_jinja_does() {
        let t = Template::detect(SMOLLM2).unwrap();
        let sys = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
        assert_eq!(
            t,
            Template::ChatMl {
                default_system: Some(sys.into())
            }
        );
        let turns = vec![("Hi".to_string(), "Hello!".to_string())];
        assert_eq!(
            t.render(None, &turns, "And you?"),
            format!(
                "<|im_start|>system\n{sys}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n\
                 <|im_start|>user\nAnd you?<|im_end|>\n<|im_start|>assistant\n"
            )
        );
        // An explicit system message replaces the default; later turns carry none.
        assert_eq!(
            t.user_turn(Some("Be brief."), true, " Hi \n"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.user_turn(Some("Be brief."), false, "Hi"),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn escaped_newlines_and_non_literal_system_messages() {
        let escaped = r"{{ '<|im_start|>system\nBe nice.<|im_end|>\n' }}";
        assert_eq!(
            Template::detect(escaped),
            Some(Template::ChatMl {
                default_system: Some("Be nice.".into())
            })
        );
        let variable = "{{ '<|im_start|>system\n' + message['content'] + '<|im_end|>' }}";
        assert_eq!(
            Template::detect(variable),
            Some(Template::ChatMl {
                default_system: None
            })
        );
        let qwen_like =
            "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'}}";
        assert_eq!(
            Template::detect(qwen_like),
            Some(Template::ChatMl {
                default_system: None
            })
        );
        assert_eq!(Template::detect("{{ messages }}"), None);
        assert_eq!(Template::detect(""), None);
    }

    #[test]
    fn gemma_and_llama3_turns() {
        let g = Template::detect("{{ '<start_of_turn>' + role + '\n' }}").unwrap();
        assert_eq!(g, Template::Gemma);
        assert_eq!(
            g.render(Some("Be brief."), &[("Hi".into(), "Hello".into())], "Bye"),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
        let l = Template::detect(
            "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}",
        )
        .unwrap();
        assert_eq!(l, Template::Llama3);
        assert_eq!(
            l.render(Some("Be brief."), &[], "Hi"),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            l.user_turn(None, true, "Hi"),
            l.user_turn(Some("x"), false, "Hi")
        );
    }
}
