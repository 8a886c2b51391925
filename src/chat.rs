//! Chat templates, rendered natively.
//!
//! The template is recognised from the Jinja text the model file keeps under
//! `tokenizer.chat_template`; it is never executed. Three families are known: ChatML
//! (SmolLM2, Qwen), Gemma's turns and Llama 3's headers. `pipit chat` (the binary) holds
//! the conversation loop.

use crate::model::Model;
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
    /// `<|user|>\n...<|end|>\n<|assistant|>\n` (Phi-3 / 3.5).
    Phi3,
    /// `[INST] ... [/INST]`, replies closed by `</s>` (Mistral, Llama 2); a system message
    /// opens the first user turn.
    Mistral,
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
        } else if jinja.contains("<|user|>") && jinja.contains("<|end|>") {
            Some(Template::Phi3)
        } else if jinja.contains("[INST]") {
            Some(Template::Mistral)
        } else {
            None
        }
    }

    /// The names [`Template::named`] knows (`pipit chat --template`).
    pub const NAMES: &'static [&'static str] = &["chatml", "gemma", "llama3", "phi3", "mistral"];

    /// The template a name from [`Template::NAMES`] asks for.
    pub fn named(name: &str) -> Option<Template> {
        match name {
            "chatml" => Some(Template::ChatMl {
                default_system: None,
            }),
            "gemma" => Some(Template::Gemma),
            "llama3" => Some(Template::Llama3),
            "phi3" => Some(Template::Phi3),
            "mistral" => Some(Template::Mistral),
            _ => None,
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
                "the model's chat template is none of ChatML, Gemma, Llama 3, Phi-3 or Mistral; choose one with --template".into(),
            )
        })
    }

    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Template::ChatMl { .. } => "ChatML",
            Template::Gemma => "Gemma",
            Template::Llama3 => "Llama 3",
            Template::Phi3 => "Phi-3",
            Template::Mistral => "Mistral",
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
            Template::Phi3 => {
                let mut s = String::new();
                if let Some(sys) = system.filter(|_| first) {
                    s += &format!("<|system|>\n{}<|end|>\n", sys.trim());
                }
                s + &format!("<|user|>\n{user}<|end|>\n<|assistant|>\n")
            }
            Template::Mistral => match system.filter(|_| first) {
                Some(sys) => format!("[INST] {}\n\n{user} [/INST]", sys.trim()),
                None => format!("[INST] {user} [/INST]"),
            },
        }
    }

    /// What closes a reply (the end-of-turn token itself is not evaluated when sampled).
    pub fn end_of_reply(&self) -> &'static str {
        match self {
            Template::ChatMl { .. } => "<|im_end|>\n",
            Template::Gemma => "<end_of_turn>\n",
            Template::Llama3 => "<|eot_id|>",
            Template::Phi3 => "<|end|>\n",
            Template::Mistral => "</s>",
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
    fn every_name_names_a_template() {
        for name in Template::NAMES {
            assert!(Template::named(name).is_some(), "{name}");
        }
        assert_eq!(Template::named("jinja"), None);
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
