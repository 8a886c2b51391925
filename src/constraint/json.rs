//! `--json` and `--json-schema FILE`: JSON Schema (2020-12 and draft-07 spellings) to the
//! grammar IR.
//!
//! Output is compact (no whitespace at all), numbers have at most 16 integer and 16
//! fraction digits, so a model cannot spend its budget on spaces or digits.
//!
//! Supported: `type` (lists too), `properties`, `required`, `additionalProperties` (with
//! listed properties only those are generated; without, members of any name), `enum`,
//! `const`, `anyOf`, `allOf` (merged), `oneOf` when provably disjoint, local `$ref` into
//! `$defs`/`definitions` (recursion included), `items`, `prefixItems`, `minItems`,
//! `maxItems`, `minLength`, `maxLength`, `pattern`, `format` (date, time, date-time,
//! email, uuid, uri), `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum` (exact for
//! integers; a bounded `number` is generated as an integer in the bounds). Titles,
//! descriptions and other annotations are ignored; any other keyword is an error naming it.

use std::collections::HashMap;

use super::ir::{self, ByteSet, Expr, Grammar, MAX_NEST};
use super::regex;
use crate::{Error, Result};

/// A parsed JSON value; object members keep their order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// The number's text as written, and its value.
    Num(String, f64),
    Str(String),
    Arr(Vec<Value>),
    Obj(Vec<(String, Value)>),
}

impl Value {
    pub fn get(&self, k: &str) -> Option<&Value> {
        match self {
            Value::Obj(m) => m.iter().find(|(n, _)| n == k).map(|(_, v)| v),
            _ => None,
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Num(t, v) => {
                if v.fract() == 0.0 && !t.contains(['.', 'e', 'E']) {
                    "integer"
                } else {
                    "number"
                }
            }
            Value::Str(_) => "string",
            Value::Arr(_) => "array",
            Value::Obj(_) => "object",
        }
    }
    /// Compact JSON text.
    pub fn write(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Num(t, _) => out.push_str(t),
            Value::Str(s) => write_str(s, out),
            Value::Arr(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Value::Obj(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Parses JSON text (nesting bounded by [`MAX_NEST`]).
pub fn parse(text: &str) -> Result<Value> {
    let mut p = JsonParser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(v)
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn err(&self, what: &str) -> Error {
        Error::InvalidArgument(format!(
            "JSON Schema is not valid JSON: {what} at byte {}",
            self.i
        ))
    }
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }
    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_NEST {
            return Err(ir::too_deep("JSON"));
        }
        self.ws();
        let Some(&c) = self.s.get(self.i) else {
            return Err(self.err("unexpected end"));
        };
        match c {
            b'{' => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.eat("}") {
                    return Ok(Value::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    if !self.eat(":") {
                        return Err(self.err("expected ':'"));
                    }
                    let v = self.value(depth + 1)?;
                    m.push((k, v));
                    self.ws();
                    if self.eat(",") {
                        continue;
                    }
                    if self.eat("}") {
                        return Ok(Value::Obj(m));
                    }
                    return Err(self.err("expected ',' or '}'"));
                }
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.eat("]") {
                    return Ok(Value::Arr(a));
                }
                loop {
                    a.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(",") {
                        continue;
                    }
                    if self.eat("]") {
                        return Ok(Value::Arr(a));
                    }
                    return Err(self.err("expected ',' or ']'"));
                }
            }
            b'"' => Ok(Value::Str(self.string()?)),
            b't' if self.eat("true") => Ok(Value::Bool(true)),
            b'f' if self.eat("false") => Ok(Value::Bool(false)),
            b'n' if self.eat("null") => Ok(Value::Null),
            b'-' | b'0'..=b'9' => {
                let b = self.i;
                while matches!(
                    self.s.get(self.i),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[b..self.i]).unwrap_or("");
                let v: f64 = t.parse().map_err(|_| self.err("bad number"))?;
                Ok(Value::Num(t.to_string(), v))
            }
            _ => Err(self.err("unexpected character")),
        }
    }
    fn string(&mut self) -> Result<String> {
        if !self.eat("\"") {
            return Err(self.err("expected a string"));
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return Err(self.err("unterminated string"));
            };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return Err(self.err("unterminated string"));
                    };
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\x08',
                        b'f' => '\x0C',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp) && self.eat("\\u") {
                                let lo = self.hex4()?;
                                cp = 0x10000
                                    + ((cp - 0xD800) << 10)
                                    + (lo.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            char::from_u32(cp).unwrap_or('\u{FFFD}')
                        }
                        _ => return Err(self.err("bad escape")),
                    };
                    let mut b = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                }
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("invalid UTF-8"))
    }
    fn hex4(&mut self) -> Result<u32> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("short \\u escape"))?;
        let v = std::str::from_utf8(h)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }
}

/// The grammar of JSON values valid against `schema` ("" or only blanks = any JSON value).
pub fn grammar(schema: &str) -> Result<Grammar> {
    let root = if schema.trim().is_empty() {
        Value::Bool(true)
    } else {
        parse(schema)?
    };
    let mut cx = Cx {
        root: &root,
        g: Grammar::default(),
        refs: HashMap::new(),
        string: None,
        any: None,
        depth: 0,
    };
    let top = cx.g.add("root", Expr::empty());
    let e = cx.schema(&root)?;
    cx.g.rules[top] = e;
    cx.g.root = top;
    Ok(cx.g)
}

struct Cx<'a> {
    root: &'a Value,
    g: Grammar,
    refs: HashMap<String, usize>,
    string: Option<usize>,
    any: Option<usize>,
    depth: usize,
}

const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$schema",
    "$id",
    "$comment",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$defs",
    "definitions",
    "$anchor",
];
const KNOWN: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "const",
    "anyOf",
    "allOf",
    "oneOf",
    "$ref",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
];
const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "integer", "string",
];

fn unsupported(k: &str) -> Error {
    Error::Unsupported(format!("unsupported JSON Schema keyword \"{k}\""))
}
fn bad(what: &str) -> Error {
    Error::InvalidArgument(format!("JSON Schema: {what}"))
}

fn re(p: &str) -> Expr {
    // Fixed patterns written below: parsing cannot fail.
    regex::parse(p).unwrap_or_else(|_| Expr::Alt(Vec::new()))
}

/// One JSON string character (raw, or an escape).
fn str_char() -> Expr {
    let raw = ir::utf8_class(&ir::negate(&[
        (0, 0x1F),
        (0x22, 0x22),
        (0x5C, 0x5C),
        (0x7F, 0x7F),
    ]));
    Expr::Alt(vec![
        raw,
        re(r#"\\(["\\/bfnrt]|u([0-9a-cA-CeEfF][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))"#),
    ])
}

const NUMBER: &str = r"-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,16})?([eE][-+]?[0-9]{1,2})?";
const INTEGER: &str = r"-?(0|[1-9][0-9]{0,15})";
/// The largest magnitude generated integers reach (16 digits).
const INT_LIMIT: i128 = 9_999_999_999_999_999;

fn format_regex(f: &str) -> Result<&'static str> {
    Ok(match f {
        "date" => DATE,
        "time" => TIME,
        "date-time" => DATE_TIME,
        "email" => {
            r"[a-z0-9]+([._-][a-z0-9]+){0,3}@[a-z0-9]+(-[a-z0-9]+)?(\.[a-z0-9]+(-[a-z0-9]+)?){0,2}\.[a-z]{2,6}"
        }
        "uuid" => r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "uri" => {
            r"https?://[a-z0-9]+(-[a-z0-9]+)*(\.[a-z0-9]+(-[a-z0-9]+)*)+(/[a-zA-Z0-9._~-]+){0,8}/?"
        }
        _ => {
            return Err(Error::Unsupported(format!(
                "unsupported JSON Schema format \"{f}\""
            )))
        }
    })
}
// Days per month without February 29th (no leap-year arithmetic in a regular language).
const DATE: &str = r"[12][0-9]{3}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))";
const TIME: &str =
    r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";
const DATE_TIME: &str = r"[12][0-9]{3}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";

/// Decimal integers in `lo..=hi` (both within ±[`INT_LIMIT`]), canonical spelling.
pub fn int_range(lo: i128, hi: i128) -> Expr {
    let mut alts = Vec::new();
    if lo > hi {
        return Expr::Alt(alts);
    }
    if lo < 0 {
        // Negative part: "-" then magnitudes max(1, -hi)..=-lo.
        let a = if hi < 0 { -hi } else { 1 };
        alts.push(Expr::Seq(vec![Expr::lit(b"-"), nonneg_range(a, -lo)]));
    }
    if hi >= 0 {
        alts.push(nonneg_range(lo.max(0), hi));
    }
    Expr::Alt(alts)
}

fn nonneg_range(lo: i128, hi: i128) -> Expr {
    let mut alts = Vec::new();
    let mut len = 1;
    let mut p = 1i128; // 10^(len-1)
    while p <= hi.max(1) {
        let (a, b) = (lo.max(if len == 1 { 0 } else { p }), hi.min(p * 10 - 1));
        if a <= b {
            let (sa, sb) = (a.to_string().into_bytes(), b.to_string().into_bytes());
            alts.push(same_len(&sa, &sb));
        }
        len += 1;
        p *= 10;
    }
    Expr::Alt(alts)
}

/// Digit strings of equal length between `a` and `b` inclusive (linear in the length:
/// only one side recurses with a bound that is not all zeros or all nines).
fn same_len(a: &[u8], b: &[u8]) -> Expr {
    if a.is_empty() {
        return Expr::empty();
    }
    let n = a.len() - 1;
    let digits = |n: usize| {
        Expr::rep(
            Expr::Bytes(ByteSet::range(b'0', b'9')),
            n as u32,
            Some(n as u32),
        )
    };
    let zeros = a[1..].iter().all(|&d| d == b'0');
    let nines = b[1..].iter().all(|&d| d == b'9');
    if a[0] == b[0] {
        if zeros && nines {
            return Expr::Seq(vec![Expr::lit(&a[..1]), digits(n)]);
        }
        return Expr::Seq(vec![Expr::lit(&a[..1]), same_len(&a[1..], &b[1..])]);
    }
    let mut alts = Vec::new();
    let mut lo = a[0];
    if !zeros {
        alts.push(Expr::Seq(vec![
            Expr::lit(&a[..1]),
            same_len(&a[1..], &vec![b'9'; n]),
        ]));
        lo += 1;
    }
    let mut hi = b[0];
    let mut tail = None;
    if !nines {
        tail = Some(Expr::Seq(vec![
            Expr::lit(&b[..1]),
            same_len(&vec![b'0'; n], &b[1..]),
        ]));
        hi -= 1;
    }
    if lo <= hi {
        alts.push(Expr::Seq(vec![
            Expr::Bytes(ByteSet::range(lo, hi)),
            digits(n),
        ]));
    }
    alts.extend(tail);
    Expr::Alt(alts)
}

fn size(e: &Expr) -> usize {
    match e {
        Expr::Bytes(_) | Expr::Ref(_) => 1,
        Expr::Seq(v) | Expr::Alt(v) => 1 + v.iter().map(size).sum::<usize>(),
        Expr::Repeat(x, min, max) => 1 + size(x) * (*max).unwrap_or(*min + 1).max(1) as usize,
        Expr::SepList(items, sep) => {
            1 + items
                .iter()
                .map(|(x, _)| 2 * size(x) + size(sep))
                .sum::<usize>()
        }
    }
}

fn num(v: Option<&Value>, k: &str) -> Result<Option<f64>> {
    match v {
        None => Ok(None),
        Some(Value::Num(_, x)) => Ok(Some(*x)),
        Some(_) => Err(bad(&format!("\"{k}\" must be a number"))),
    }
}

fn count(v: Option<&Value>, k: &str) -> Result<Option<u32>> {
    match num(v, k)? {
        None => Ok(None),
        Some(x) if x >= 0.0 && x.fract() == 0.0 && x <= f64::from(ir::MAX_REPEAT) => {
            Ok(Some(x as u32))
        }
        Some(_) => Err(bad(&format!(
            "\"{k}\" must be a whole number up to {}",
            ir::MAX_REPEAT
        ))),
    }
}

impl Cx<'_> {
    /// A shared rule for an expression that is large, so that its states are shared.
    fn share(&mut self, name: &str, e: Expr) -> Expr {
        if size(&e) <= 48 {
            return e;
        }
        let r = self.g.add(name, e);
        self.g.keep[r] = true;
        Expr::Ref(r)
    }

    fn string_rule(&mut self) -> Expr {
        let r = *self.string.get_or_insert_with(|| {
            let body = Expr::Seq(vec![
                Expr::lit(b"\""),
                Expr::rep(str_char(), 0, None),
                Expr::lit(b"\""),
            ]);
            let r = self.g.add("string", body);
            self.g.keep[r] = true;
            r
        });
        Expr::Ref(r)
    }

    fn any_rule(&mut self) -> Expr {
        if let Some(r) = self.any {
            return Expr::Ref(r);
        }
        let r = self.g.add("value", Expr::empty());
        self.any = Some(r);
        let s = self.string_rule();
        let v = Expr::Ref(r);
        let members = Expr::Seq(vec![s.clone(), Expr::lit(b":"), v.clone()]);
        let list = |x: Expr| {
            Expr::opt(Expr::Seq(vec![
                x.clone(),
                Expr::rep(Expr::Seq(vec![Expr::lit(b","), x]), 0, None),
            ]))
        };
        let body = Expr::Alt(vec![
            Expr::Seq(vec![Expr::lit(b"{"), list(members), Expr::lit(b"}")]),
            Expr::Seq(vec![Expr::lit(b"["), list(v), Expr::lit(b"]")]),
            s,
            re(NUMBER),
            ir::lit_str("true"),
            ir::lit_str("false"),
            ir::lit_str("null"),
        ]);
        self.g.rules[r] = body;
        Expr::Ref(r)
    }

    fn resolve(&self, r: &str) -> Result<&Value> {
        let path = r.strip_prefix('#').ok_or_else(|| {
            Error::Unsupported(format!("unsupported $ref \"{r}\" (only local refs)"))
        })?;
        let mut v = self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let part = part.replace("~1", "/").replace("~0", "~");
            v = match v {
                Value::Obj(_) => v.get(&part),
                Value::Arr(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            }
            .ok_or_else(|| bad(&format!("$ref \"{r}\" points nowhere")))?;
        }
        Ok(v)
    }

    fn schema(&mut self, s: &Value) -> Result<Expr> {
        self.depth += 1;
        if self.depth > MAX_NEST {
            return Err(ir::too_deep("JSON Schema"));
        }
        let e = self.schema_inner(s);
        self.depth -= 1;
        e
    }

    fn schema_inner(&mut self, s: &Value) -> Result<Expr> {
        let m = match s {
            Value::Bool(true) => return Ok(self.any_rule()),
            Value::Bool(false) => return Ok(Expr::Alt(Vec::new())),
            Value::Obj(m) => m,
            _ => return Err(bad("a schema must be an object or a boolean")),
        };
        for (k, _) in m {
            if !KNOWN.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()) {
                return Err(unsupported(k));
            }
        }
        let has = |k: &str| s.get(k).is_some();
        let constraining: Vec<&str> = m
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| KNOWN.contains(k))
            .collect();
        if let Some(r) = s.get("$ref") {
            let Value::Str(r) = r else {
                return Err(bad("$ref must be a string"));
            };
            if constraining.len() > 1 {
                return Err(Error::Unsupported(
                    "unsupported JSON Schema keyword \"$ref\" next to other keywords".into(),
                ));
            }
            if let Some(&k) = self.refs.get(r) {
                return Ok(Expr::Ref(k));
            }
            let k = self.g.add(r, Expr::empty());
            self.refs.insert(r.clone(), k);
            let target = self.resolve(r)?.clone();
            let body = self.schema(&target)?;
            self.g.rules[k] = body;
            return Ok(Expr::Ref(k));
        }
        if let Some(all) = s.get("allOf") {
            let Value::Arr(parts) = all else {
                return Err(bad("allOf must be an array"));
            };
            let mut merged: Vec<(String, Value)> =
                m.iter().filter(|(k, _)| k != "allOf").cloned().collect();
            for p in parts {
                let p = self.deref(p)?;
                let Value::Obj(pm) = p else {
                    return Err(unsupported("allOf"));
                };
                merge(&mut merged, &pm)?;
            }
            return self.schema(&Value::Obj(merged));
        }
        if let Some(c) = s.get("const") {
            return Ok(literal(c));
        }
        if let Some(e) = s.get("enum") {
            let Value::Arr(vals) = e else {
                return Err(bad("enum must be an array"));
            };
            let types = self.types(s)?;
            let alts = vals
                .iter()
                .filter(|v| types.is_empty() || fits_type(v, &types))
                .map(literal)
                .collect();
            return Ok(Expr::Alt(alts));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(a) = s.get(key) {
                let Value::Arr(branches) = a else {
                    return Err(bad(&format!("{key} must be an array")));
                };
                let rest: Vec<(String, Value)> =
                    m.iter().filter(|(k, _)| k != key).cloned().collect();
                let mut resolved = Vec::new();
                for b in branches {
                    let mut merged = rest.clone();
                    let b = self.deref(b)?;
                    match &b {
                        Value::Obj(bm) => merge(&mut merged, bm)?,
                        Value::Bool(true) => {}
                        _ => return Err(unsupported(key)),
                    }
                    resolved.push(Value::Obj(merged));
                }
                if key == "oneOf" && !disjoint(&resolved) {
                    return Err(Error::Unsupported(
                        "unsupported JSON Schema keyword \"oneOf\" whose branches are not provably disjoint".into(),
                    ));
                }
                // Without sibling keywords the branches compile as written, so that a
                // `$ref` stays a reference (recursion) rather than being expanded.
                let plain = rest.iter().all(|(k, _)| !KNOWN.contains(&k.as_str()));
                let mut alts = Vec::new();
                for (b, r) in branches.iter().zip(&resolved) {
                    alts.push(self.schema(if plain { b } else { r })?);
                }
                return Ok(Expr::Alt(alts));
            }
        }
        let mut types = self.types(s)?;
        if types.is_empty() {
            // No type: the keywords present say which types they constrain.
            let implied = [
                (
                    "object",
                    &["properties", "required", "additionalProperties"][..],
                ),
                (
                    "array",
                    &["items", "prefixItems", "minItems", "maxItems"][..],
                ),
                (
                    "string",
                    &["minLength", "maxLength", "pattern", "format"][..],
                ),
                (
                    "number",
                    &["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"][..],
                ),
            ];
            for (t, keys) in implied {
                if keys.iter().any(|k| has(k)) {
                    types.push(t);
                }
            }
            if types.is_empty() {
                return Ok(self.any_rule());
            }
        }
        let mut alts = Vec::new();
        for t in types {
            alts.push(match t {
                "null" => ir::lit_str("null"),
                "boolean" => Expr::Alt(vec![ir::lit_str("true"), ir::lit_str("false")]),
                "string" => self.string(s)?,
                "integer" => self.integer(s, true)?,
                "number" => self.integer(s, false)?,
                "object" => self.object(s)?,
                "array" => self.array(s)?,
                _ => return Err(bad(&format!("unknown type \"{t}\""))),
            });
        }
        Ok(if alts.len() == 1 {
            alts.remove(0)
        } else {
            Expr::Alt(alts)
        })
    }

    /// `s` with a top-level `$ref` replaced by its target (for merging).
    fn deref(&self, s: &Value) -> Result<Value> {
        let mut v = s.clone();
        for _ in 0..32 {
            match v.get("$ref") {
                Some(Value::Str(r)) => v = self.resolve(r)?.clone(),
                _ => return Ok(v),
            }
        }
        Err(bad("$ref chain too long"))
    }

    fn types(&self, s: &Value) -> Result<Vec<&'static str>> {
        let one = |v: &Value| -> Result<&'static str> {
            match v {
                Value::Str(t) => TYPES
                    .iter()
                    .find(|x| *x == t)
                    .copied()
                    .ok_or_else(|| bad(&format!("unknown type \"{t}\""))),
                _ => Err(bad("type must be a string or a list of strings")),
            }
        };
        Ok(match s.get("type") {
            None => Vec::new(),
            Some(Value::Arr(a)) => a.iter().map(one).collect::<Result<_>>()?,
            Some(v) => vec![one(v)?],
        })
    }

    fn string(&mut self, s: &Value) -> Result<Expr> {
        let min = count(s.get("minLength"), "minLength")?;
        let max = count(s.get("maxLength"), "maxLength")?;
        let q = Expr::lit(b"\"");
        if let Some(f) = s.get("format") {
            let Value::Str(f) = f else {
                return Err(bad("format must be a string"));
            };
            if min.is_some() || max.is_some() || s.get("pattern").is_some() {
                return Err(Error::Unsupported(
                    "unsupported JSON Schema keyword \"format\" together with a length or pattern"
                        .into(),
                ));
            }
            return Ok(Expr::Seq(vec![q.clone(), re(format_regex(f)?), q]));
        }
        if let Some(p) = s.get("pattern") {
            let Value::Str(p) = p else {
                return Err(bad("pattern must be a string"));
            };
            if min.is_some() || max.is_some() {
                return Err(Error::Unsupported(
                    "unsupported JSON Schema keyword \"pattern\" together with minLength/maxLength"
                        .into(),
                ));
            }
            let mut e = regex::parse(p)?;
            // Only characters that need no escape inside a JSON string.
            let mut drop = ByteSet::range(0, 0x1F);
            drop.insert(b'"');
            drop.insert(b'\\');
            drop.insert(0x7F);
            ir::remove_bytes(&mut e, &drop);
            return Ok(Expr::Seq(vec![q.clone(), e, q]));
        }
        if min.is_none() && max.is_none() {
            return Ok(self.string_rule());
        }
        let (min, max) = (min.unwrap_or(0), max);
        if max.is_some_and(|x| x < min) {
            return Ok(Expr::Alt(Vec::new()));
        }
        Ok(Expr::Seq(vec![
            q.clone(),
            Expr::rep(str_char(), min, max),
            q,
        ]))
    }

    fn integer(&mut self, s: &Value, integer: bool) -> Result<Expr> {
        let (lo, hi, xlo, xhi) = (
            num(s.get("minimum"), "minimum")?,
            num(s.get("maximum"), "maximum")?,
            num(s.get("exclusiveMinimum"), "exclusiveMinimum")?,
            num(s.get("exclusiveMaximum"), "exclusiveMaximum")?,
        );
        if lo.is_none() && hi.is_none() && xlo.is_none() && xhi.is_none() {
            return Ok(re(if integer { INTEGER } else { NUMBER }));
        }
        let clamp = |x: f64| (x.clamp(-(INT_LIMIT as f64), INT_LIMIT as f64)) as i128;
        let mut a = -INT_LIMIT;
        let mut b = INT_LIMIT;
        if let Some(x) = lo {
            a = a.max(clamp(x.ceil()));
        }
        if let Some(x) = xlo {
            a = a.max(clamp(x.floor()) + 1);
        }
        if let Some(x) = hi {
            b = b.min(clamp(x.floor()));
        }
        if let Some(x) = xhi {
            b = b.min(clamp(x.ceil()) - 1);
        }
        Ok(int_range(a, b))
    }

    fn object(&mut self, s: &Value) -> Result<Expr> {
        let props: &[(String, Value)] = match s.get("properties") {
            None => &[],
            Some(Value::Obj(p)) => p,
            Some(_) => return Err(bad("properties must be an object")),
        };
        let required: Vec<&str> = match s.get("required") {
            None => Vec::new(),
            Some(Value::Arr(a)) => a
                .iter()
                .map(|v| match v {
                    Value::Str(k) => Ok(k.as_str()),
                    _ => Err(bad("required must list strings")),
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(bad("required must be an array")),
        };
        let additional = s.get("additionalProperties");
        let mut items = Vec::new();
        for (k, v) in props {
            let mut key = String::new();
            write_str(k, &mut key);
            key.push(':');
            let value = self.schema(v)?;
            let value = self.share(k, value);
            items.push((
                Expr::Seq(vec![ir::lit_str(&key), value]),
                required.contains(&k.as_str()),
            ));
        }
        for r in &required {
            if !props.iter().any(|(k, _)| k == r) {
                let mut key = String::new();
                write_str(r, &mut key);
                key.push(':');
                let value = match additional {
                    Some(a) => self.schema(a)?,
                    None => self.any_rule(),
                };
                items.push((Expr::Seq(vec![ir::lit_str(&key), value]), true));
            }
        }
        let body = if items.is_empty() {
            // No listed members: members of any name, unless additionalProperties forbids.
            match additional {
                Some(Value::Bool(false)) => Expr::empty(),
                a => {
                    let value = match a {
                        Some(a) => self.schema(a)?,
                        None => self.any_rule(),
                    };
                    let member = Expr::Seq(vec![self.string_rule(), Expr::lit(b":"), value]);
                    Expr::opt(Expr::Seq(vec![
                        member.clone(),
                        Expr::rep(Expr::Seq(vec![Expr::lit(b","), member]), 0, None),
                    ]))
                }
            }
        } else {
            if let Some(a) = additional {
                if !matches!(a, Value::Bool(_) | Value::Obj(_)) {
                    return Err(bad("additionalProperties must be a schema"));
                }
            }
            Expr::SepList(items, Box::new(Expr::lit(b",")))
        };
        Ok(Expr::Seq(vec![Expr::lit(b"{"), body, Expr::lit(b"}")]))
    }

    fn array(&mut self, s: &Value) -> Result<Expr> {
        let min = count(s.get("minItems"), "minItems")?.unwrap_or(0);
        let max = count(s.get("maxItems"), "maxItems")?;
        let prefix: &[Value] = match s.get("prefixItems") {
            None => &[],
            Some(Value::Arr(a)) => a,
            Some(_) => return Err(bad("prefixItems must be an array")),
        };
        let n = prefix.len() as u32;
        let mut parts = Vec::new();
        for p in prefix {
            parts.push(self.schema(p)?);
        }
        let (item, extra_max) = match s.get("items") {
            Some(Value::Bool(false)) => (None, Some(0)),
            Some(Value::Arr(_)) => return Err(Error::Unsupported("unsupported JSON Schema keyword \"items\" as an array (draft-04 tuples): use prefixItems".into())),
            Some(i) => (Some(self.schema(i)?), max.map(|m| m.saturating_sub(n))),
            None => (Some(self.any_rule()), max.map(|m| m.saturating_sub(n))),
        };
        if max.is_some_and(|m| m < n || m < min) {
            return Err(Error::Unsupported("unsupported JSON Schema keyword \"maxItems\" below the prefixItems count or minItems".into()));
        }
        let extra_min = min.saturating_sub(n);
        if extra_max.is_some_and(|m| m < extra_min) {
            return Ok(Expr::Alt(Vec::new()));
        }
        let comma = Expr::lit(b",");
        let mut seq = vec![Expr::lit(b"[")];
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 {
                seq.push(comma.clone());
            }
            seq.push(p);
        }
        if let Some(item) = item {
            if extra_max != Some(0) {
                let item = self.share("item", item);
                let with_comma = Expr::Seq(vec![comma.clone(), item.clone()]);
                if n > 0 {
                    seq.push(Expr::rep(with_comma, extra_min, extra_max));
                } else {
                    let rest = Expr::rep(
                        with_comma,
                        extra_min.saturating_sub(1),
                        extra_max.map(|m| m - 1),
                    );
                    let list = Expr::Seq(vec![item, rest]);
                    seq.push(if extra_min == 0 {
                        Expr::opt(list)
                    } else {
                        list
                    });
                }
            }
        }
        seq.push(Expr::lit(b"]"));
        Ok(Expr::Seq(seq))
    }
}

/// The compact JSON text of `v`, literally.
fn literal(v: &Value) -> Expr {
    let mut t = String::new();
    v.write(&mut t);
    ir::lit_str(&t)
}

fn fits_type(v: &Value, types: &[&str]) -> bool {
    let t = v.type_name();
    types.contains(&t) || (t == "integer" && types.contains(&"number"))
}

/// Merges the keywords of `add` into `into` (allOf): properties joined, required unioned,
/// types intersected, anything else must agree.
fn merge(into: &mut Vec<(String, Value)>, add: &[(String, Value)]) -> Result<()> {
    for (k, v) in add {
        if ANNOTATIONS.contains(&k.as_str()) {
            continue;
        }
        let Some(pos) = into.iter().position(|(n, _)| n == k) else {
            into.push((k.clone(), v.clone()));
            continue;
        };
        let cur = &mut into[pos].1;
        match (k.as_str(), &mut *cur, v) {
            (_, a, b) if *a == *b => {}
            ("properties", Value::Obj(a), Value::Obj(b)) => {
                for (pk, pv) in b {
                    match a.iter().position(|(n, _)| n == pk) {
                        None => a.push((pk.clone(), pv.clone())),
                        Some(i) if a[i].1 == *pv => {}
                        Some(_) => return Err(Error::Unsupported(format!("unsupported JSON Schema keyword \"allOf\" with two schemas for property \"{pk}\""))),
                    }
                }
            }
            ("required", Value::Arr(a), Value::Arr(b)) => {
                for r in b {
                    if !a.contains(r) {
                        a.push(r.clone());
                    }
                }
            }
            ("type", a, b) => {
                let list = |v: &Value| match v {
                    Value::Arr(x) => x.clone(),
                    x => vec![x.clone()],
                };
                let bl = list(b);
                let both: Vec<Value> = list(a).into_iter().filter(|t| bl.contains(t)).collect();
                *a = Value::Arr(both);
            }
            _ => {
                return Err(Error::Unsupported(format!(
                    "unsupported JSON Schema keyword \"allOf\" with conflicting \"{k}\""
                )))
            }
        }
    }
    Ok(())
}

/// Whether the oneOf branches are provably disjoint: different types, distinct const/enum
/// values, or objects told apart by a required property with distinct const/enum values.
fn disjoint(branches: &[Value]) -> bool {
    let type_set = |b: &Value| -> Option<Vec<String>> {
        match b.get("type") {
            Some(Value::Str(t)) => Some(vec![t.clone()]),
            Some(Value::Arr(a)) => Some(
                a.iter()
                    .filter_map(|v| match v {
                        Value::Str(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        }
    };
    let overlap = |a: &[String], b: &[String]| {
        a.iter().any(|x| {
            b.iter().any(|y| {
                x == y || (x == "integer" && y == "number") || (x == "number" && y == "integer")
            })
        })
    };
    let values = |b: &Value| -> Option<Vec<Value>> {
        match (b.get("const"), b.get("enum")) {
            (Some(c), _) => Some(vec![c.clone()]),
            (None, Some(Value::Arr(a))) => Some(a.clone()),
            _ => None,
        }
    };
    let pairwise = |f: &dyn Fn(&Value, &Value) -> bool| {
        (0..branches.len()).all(|i| (i + 1..branches.len()).all(|j| f(&branches[i], &branches[j])))
    };
    if pairwise(
        &|a, b| matches!((type_set(a), type_set(b)), (Some(x), Some(y)) if !overlap(&x, &y)),
    ) {
        return true;
    }
    if pairwise(
        &|a, b| matches!((values(a), values(b)), (Some(x), Some(y)) if x.iter().all(|v| !y.contains(v))),
    ) {
        return true;
    }
    // A discriminator property.
    let Some(Value::Obj(first)) = branches.first().and_then(|b| b.get("properties")) else {
        return false;
    };
    first.iter().any(|(p, _)| {
        let disc = |b: &Value| -> Option<Vec<Value>> {
            let req = matches!(b.get("required"), Some(Value::Arr(r)) if r.contains(&Value::Str(p.clone())));
            if !req {
                return None;
            }
            values(b.get("properties")?.get(p)?)
        };
        pairwise(&|a, b| matches!((disc(a), disc(b)), (Some(x), Some(y)) if x.iter().all(|v| !y.contains(v))))
    })
}
