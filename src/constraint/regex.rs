//! `--regex`: the whole output matches the pattern.
//!
//! Syntax: literals (UTF-8), `.` (any character but newline), classes `[a-z]`, `[^...]`
//! with ranges and escapes, `\d \w \s \D \W \S`, escapes (`\n \t \r \f \v \0 \xHH
//! \u{H..} \uHHHH` and escaped punctuation), groups `( )` and `(?: )`, alternation `|`,
//! quantifiers `* + ? {m} {m,} {m,n}` (a trailing `?` for laziness is accepted and
//! ignored), and `^`/`$` (the match is always whole). `\d \w \s` are ASCII.

use super::ir::{self, CharRange, Expr, Grammar, MAX_NEST, MAX_REPEAT};
use crate::{Error, Result};

/// The grammar whose language is the pattern's.
pub fn grammar(pattern: &str) -> Result<Grammar> {
    let e = parse(pattern)?;
    let mut g = Grammar::default();
    g.root = g.add("root", e);
    Ok(g)
}

/// The pattern as an expression.
pub fn parse(pattern: &str) -> Result<Expr> {
    let mut p = Parser {
        s: pattern.chars().collect(),
        i: 0,
        depth: 0,
    };
    let e = p.alt()?;
    if p.i < p.s.len() {
        return Err(p.err("unmatched ')'"));
    }
    Ok(e)
}

struct Parser {
    s: Vec<char>,
    i: usize,
    depth: usize,
}

pub const DIGIT: &[CharRange] = &[(0x30, 0x39)];
pub const WORD: &[CharRange] = &[(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)];
pub const SPACE: &[CharRange] = &[(0x09, 0x0D), (0x20, 0x20)];

impl Parser {
    fn err(&self, what: &str) -> Error {
        Error::InvalidArgument(format!("regex: {what} at character {}", self.i))
    }
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.i += 1;
        c
    }

    fn alt(&mut self) -> Result<Expr> {
        self.depth += 1;
        if self.depth > MAX_NEST {
            return Err(ir::too_deep("regex"));
        }
        let mut alts = vec![self.seq()?];
        while self.peek() == Some('|') {
            self.i += 1;
            alts.push(self.seq()?);
        }
        self.depth -= 1;
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or_else(Expr::empty)
        } else {
            Expr::Alt(alts)
        })
    }

    fn seq(&mut self) -> Result<Expr> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            let atom = self.quantifiers(atom)?;
            items.push(atom);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or_else(Expr::empty)
        } else {
            Expr::Seq(items)
        })
    }

    fn quantifiers(&mut self, mut e: Expr) -> Result<Expr> {
        loop {
            let (min, max) = match self.peek() {
                Some(c @ ('*' | '+' | '?')) => {
                    self.i += 1;
                    match c {
                        '*' => (0, None),
                        '+' => (1, None),
                        _ => (0, Some(1)),
                    }
                }
                Some('{') => match self.counted()? {
                    Some(q) => q,
                    None => return Ok(e),
                },
                _ => return Ok(e),
            };
            e = Expr::rep(e, min, max);
            if self.peek() == Some('?') {
                // Lazy quantifier: same language.
                self.i += 1;
            }
        }
    }

    /// `{m}`, `{m,}`, `{m,n}` at the cursor (consumed); `None` if it is a literal `{`.
    fn counted(&mut self) -> Result<Option<(u32, Option<u32>)>> {
        let start = self.i;
        self.i += 1;
        let num = |p: &mut Parser| -> Option<u64> {
            let b = p.i;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.i += 1;
            }
            if p.i == b {
                return None;
            }
            p.s[b..p.i].iter().collect::<String>().parse().ok()
        };
        let Some(m) = num(self) else {
            self.i = start;
            return Ok(None);
        };
        let max = if self.peek() == Some(',') {
            self.i += 1;
            num(self)
        } else {
            Some(m)
        };
        if self.peek() != Some('}') {
            self.i = start;
            return Ok(None);
        }
        self.i += 1;
        let big = |n: u64| n > u64::from(MAX_REPEAT);
        if big(m) || max.is_some_and(big) {
            return Err(self.err(&format!("repetition count above {MAX_REPEAT}")));
        }
        if let Some(x) = max {
            if x < m {
                return Err(self.err("repetition {m,n} with n < m"));
            }
        }
        Ok(Some((m as u32, max.map(|x| x as u32))))
    }

    fn atom(&mut self) -> Result<Expr> {
        let Some(c) = self.next() else {
            return Err(self.err("unexpected end"));
        };
        Ok(match c {
            '(' => {
                if self.peek() == Some('?') {
                    if self.s.get(self.i + 1) == Some(&':') {
                        self.i += 2;
                    } else {
                        return Err(self.err("only (?: ) groups are supported"));
                    }
                }
                let e = self.alt()?;
                if self.next() != Some(')') {
                    return Err(self.err("missing ')'"));
                }
                e
            }
            '[' => ir::utf8_class(&self.class()?),
            '.' => ir::utf8_class(&ir::negate(&[(0x0A, 0x0A)])),
            '^' | '$' => Expr::empty(),
            '\\' => match self.escape()? {
                Esc::Char(c) => char_lit(c),
                Esc::Class(r) => ir::utf8_class(&r),
            },
            '*' | '+' | '?' => return Err(self.err("quantifier without an operand")),
            c => char_lit(c),
        })
    }

    fn class(&mut self) -> Result<Vec<CharRange>> {
        let neg = self.peek() == Some('^');
        if neg {
            self.i += 1;
        }
        let mut r: Vec<CharRange> = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.next() else {
                return Err(self.err("missing ']'"));
            };
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = match c {
                '\\' => match self.escape()? {
                    Esc::Char(c) => c,
                    Esc::Class(x) => {
                        r.extend(x);
                        continue;
                    }
                },
                c => c,
            };
            if self.peek() == Some('-') && self.s.get(self.i + 1).is_some_and(|&c| c != ']') {
                self.i += 1;
                let hi = match self.next() {
                    Some('\\') => match self.escape()? {
                        Esc::Char(c) => c,
                        Esc::Class(_) => return Err(self.err("class escape as a range end")),
                    },
                    Some(c) => c,
                    None => return Err(self.err("missing ']'")),
                };
                if hi < lo {
                    return Err(self.err("range out of order"));
                }
                r.push((lo as u32, hi as u32));
            } else {
                r.push((lo as u32, lo as u32));
            }
        }
        Ok(if neg { ir::negate(&r) } else { r })
    }

    fn escape(&mut self) -> Result<Esc> {
        let Some(c) = self.next() else {
            return Err(self.err("trailing backslash"));
        };
        Ok(match c {
            'd' => Esc::Class(DIGIT.to_vec()),
            'w' => Esc::Class(WORD.to_vec()),
            's' => Esc::Class(SPACE.to_vec()),
            'D' => Esc::Class(ir::negate(DIGIT)),
            'W' => Esc::Class(ir::negate(WORD)),
            'S' => Esc::Class(ir::negate(SPACE)),
            'n' => Esc::Char('\n'),
            't' => Esc::Char('\t'),
            'r' => Esc::Char('\r'),
            'f' => Esc::Char('\x0C'),
            'v' => Esc::Char('\x0B'),
            '0' => Esc::Char('\0'),
            'x' => Esc::Char(self.hex(2)?),
            'u' => {
                if self.peek() == Some('{') {
                    self.i += 1;
                    let b = self.i;
                    while self.peek().is_some_and(|c| c != '}') {
                        self.i += 1;
                    }
                    let h: String = self.s[b..self.i].iter().collect();
                    self.i += 1;
                    let v = u32::from_str_radix(&h, 16).map_err(|_| self.err("bad \\u{...}"))?;
                    Esc::Char(char::from_u32(v).ok_or_else(|| self.err("not a scalar value"))?)
                } else {
                    Esc::Char(self.hex(4)?)
                }
            }
            c if c.is_ascii_alphanumeric() => {
                return Err(self.err(&format!("unsupported escape \\{c}")))
            }
            c => Esc::Char(c),
        })
    }

    fn hex(&mut self, n: usize) -> Result<char> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self
                .next()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.err("bad hex escape"))?;
            v = v * 16 + d;
        }
        char::from_u32(v).ok_or_else(|| self.err("not a scalar value"))
    }
}

enum Esc {
    Char(char),
    Class(Vec<CharRange>),
}

fn char_lit(c: char) -> Expr {
    let mut b = [0u8; 4];
    Expr::lit(c.encode_utf8(&mut b).as_bytes())
}
