//! `--grammar FILE`: GBNF as llama.cpp writes it.
//!
//! `name ::= alternatives`, one rule per line (a rule continues on the next line after `|`,
//! `::=` or inside parentheses); `#` comments; terminals `"literal"`, `[a-z]`, `[^...]`
//! and `.` (any character), over Unicode characters in UTF-8; rule references; groups;
//! `|`; postfix `* + ? {m} {m,} {m,n}`. Escapes: `\n \r \t \\ \" \[ \] \xHH \uHHHH
//! \UHHHHHHHH`. The start rule is `root`.

use std::collections::HashMap;

use super::ir::{self, CharRange, Expr, Grammar, MAX_NEST, MAX_REPEAT};
use crate::{Error, Result};

/// Parses `text` into a grammar rooted at `root`.
pub fn grammar(text: &str) -> Result<Grammar> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        g: Grammar::default(),
        ids: HashMap::new(),
        defined: Vec::new(),
        depth: 0,
    };
    p.space(true);
    while p.i < p.s.len() {
        p.rule()?;
        p.space(true);
    }
    let Some(&root) = p.ids.get("root") else {
        return Err(Error::InvalidArgument(
            "grammar: no rule named \"root\"".into(),
        ));
    };
    for (k, &d) in p.defined.iter().enumerate() {
        if !d {
            return Err(Error::InvalidArgument(format!(
                "grammar: rule \"{}\" is used but not defined",
                p.g.names[k]
            )));
        }
    }
    p.g.root = root;
    Ok(p.g)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    g: Grammar,
    ids: HashMap<String, usize>,
    defined: Vec<bool>,
    depth: usize,
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

impl Parser<'_> {
    fn err(&self, what: &str) -> Error {
        let line = self.s[..self.i.min(self.s.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
            + 1;
        Error::InvalidArgument(format!("grammar: {what} (line {line})"))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips blanks and comments; newlines too when `newlines`.
    fn space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' => self.i += 1,
                b'\r' | b'\n' if newlines => self.i += 1,
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn name(&mut self) -> Result<String> {
        let b = self.i;
        while self.peek().is_some_and(is_word) {
            self.i += 1;
        }
        if b == self.i {
            return Err(self.err("expected a rule name"));
        }
        Ok(String::from_utf8_lossy(&self.s[b..self.i]).into_owned())
    }

    fn id(&mut self, name: &str) -> usize {
        if let Some(&k) = self.ids.get(name) {
            return k;
        }
        let k = self.g.add(name, Expr::Alt(Vec::new()));
        self.defined.push(false);
        self.ids.insert(name.to_string(), k);
        k
    }

    fn rule(&mut self) -> Result<()> {
        let name = self.name()?;
        self.space(false);
        if !self.s[self.i..].starts_with(b"::=") {
            return Err(self.err("expected ::="));
        }
        self.i += 3;
        self.space(true);
        let body = self.alternates(false)?;
        let k = self.id(&name);
        if self.defined[k] {
            return Err(self.err(&format!("rule \"{name}\" defined twice")));
        }
        self.defined[k] = true;
        self.g.rules[k] = body;
        match self.peek() {
            None | Some(b'\n' | b'\r') => Ok(()),
            Some(c) => Err(self.err(&format!("unexpected '{}'", c as char))),
        }
    }

    fn alternates(&mut self, nested: bool) -> Result<Expr> {
        self.depth += 1;
        if self.depth > MAX_NEST {
            return Err(ir::too_deep("grammar"));
        }
        let mut alts = vec![self.sequence(nested)?];
        while self.peek() == Some(b'|') {
            self.i += 1;
            self.space(true);
            alts.push(self.sequence(nested)?);
        }
        self.depth -= 1;
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or_else(Expr::empty)
        } else {
            Expr::Alt(alts)
        })
    }

    fn sequence(&mut self, nested: bool) -> Result<Expr> {
        let mut items: Vec<Expr> = Vec::new();
        while let Some(c) = self.peek() {
            let e = match c {
                b'"' => {
                    self.i += 1;
                    let mut bytes = Vec::new();
                    loop {
                        match self.peek() {
                            None => return Err(self.err("unterminated literal")),
                            Some(b'"') => {
                                self.i += 1;
                                break;
                            }
                            Some(_) => {
                                let c = self.char()?;
                                let mut b = [0u8; 4];
                                bytes.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                            }
                        }
                    }
                    Expr::lit(&bytes)
                }
                b'[' => {
                    self.i += 1;
                    let neg = self.peek() == Some(b'^');
                    if neg {
                        self.i += 1;
                    }
                    let mut r: Vec<CharRange> = Vec::new();
                    loop {
                        match self.peek() {
                            None => return Err(self.err("unterminated character class")),
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            Some(_) => {
                                let lo = self.char()?;
                                if self.peek() == Some(b'-')
                                    && self.s.get(self.i + 1) != Some(&b']')
                                {
                                    self.i += 1;
                                    let hi = self.char()?;
                                    if hi < lo {
                                        return Err(self.err("range out of order"));
                                    }
                                    r.push((lo as u32, hi as u32));
                                } else {
                                    r.push((lo as u32, lo as u32));
                                }
                            }
                        }
                    }
                    ir::utf8_class(&if neg { ir::negate(&r) } else { r })
                }
                b'.' => {
                    self.i += 1;
                    ir::any_char()
                }
                b'(' => {
                    self.i += 1;
                    self.space(true);
                    let e = self.alternates(true)?;
                    if self.peek() != Some(b')') {
                        return Err(self.err("expected ')'"));
                    }
                    self.i += 1;
                    e
                }
                c if is_word(c) => {
                    let n = self.name()?;
                    Expr::Ref(self.id(&n))
                }
                b'*' | b'+' | b'?' | b'{' => {
                    let Some(last) = items.pop() else {
                        return Err(self.err("repetition without an operand"));
                    };
                    self.i += 1;
                    let (min, max) = match c {
                        b'*' => (0, None),
                        b'+' => (1, None),
                        b'?' => (0, Some(1)),
                        _ => self.counted()?,
                    };
                    Expr::rep(last, min, max)
                }
                b'<' => return Err(self.err("token references <...> are not supported")),
                _ => break,
            };
            items.push(e);
            self.space(nested);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or_else(Expr::empty)
        } else {
            Expr::Seq(items)
        })
    }

    /// After `{`: `m}`, `m,}` or `m,n}`.
    fn counted(&mut self) -> Result<(u32, Option<u32>)> {
        self.space(false);
        let m = self
            .int()?
            .ok_or_else(|| self.err("expected a number after '{'"))?;
        self.space(false);
        let max = if self.peek() == Some(b',') {
            self.i += 1;
            self.space(false);
            self.int()?
        } else {
            Some(m)
        };
        self.space(false);
        if self.peek() != Some(b'}') {
            return Err(self.err("expected '}'"));
        }
        self.i += 1;
        if max.is_some_and(|x| x < m) {
            return Err(self.err("repetition {m,n} with n < m"));
        }
        Ok((m, max))
    }

    fn int(&mut self) -> Result<Option<u32>> {
        let b = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        if b == self.i {
            return Ok(None);
        }
        let v: u64 = std::str::from_utf8(&self.s[b..self.i])
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(u64::MAX);
        if v > u64::from(MAX_REPEAT) {
            return Err(self.err(&format!("repetition count above {MAX_REPEAT}")));
        }
        Ok(Some(v as u32))
    }

    /// One character of a literal or class, escapes decoded.
    fn char(&mut self) -> Result<char> {
        let rest = &self.s[self.i..];
        if rest.first() == Some(&b'\\') {
            let Some(&e) = rest.get(1) else {
                return Err(self.err("trailing backslash"));
            };
            self.i += 2;
            let hex = |p: &mut Parser, n: usize| -> Result<char> {
                let h =
                    p.s.get(p.i..p.i + n)
                        .ok_or_else(|| p.err("short hex escape"))?;
                let v = std::str::from_utf8(h)
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .ok_or_else(|| p.err("bad hex escape"))?;
                p.i += n;
                char::from_u32(v).ok_or_else(|| p.err("escape is not a Unicode scalar value"))
            };
            return match e {
                b'x' => hex(self, 2),
                b'u' => hex(self, 4),
                b'U' => hex(self, 8),
                b'n' => Ok('\n'),
                b'r' => Ok('\r'),
                b't' => Ok('\t'),
                b'\\' | b'"' | b'[' | b']' | b'-' | b'^' => Ok(e as char),
                _ => Err(self.err(&format!("unknown escape \\{}", e as char))),
            };
        }
        // One UTF-8 character.
        let n = match rest.first() {
            Some(&c) if c < 0x80 => 1,
            Some(&c) if c >> 5 == 0b110 => 2,
            Some(&c) if c >> 4 == 0b1110 => 3,
            Some(&c) if c >> 3 == 0b11110 => 4,
            _ => return Err(self.err("invalid UTF-8")),
        };
        let c = rest
            .get(..n)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.chars().next())
            .ok_or_else(|| self.err("invalid UTF-8"))?;
        self.i += n;
        Ok(c)
    }
}
