//! Metadata values and the ordered key/value list of a file.

use crate::FormatError;

/// Type tags of metadata values as stored in the file (see SPEC.md, "Metadata values").
pub(crate) mod tag {
    pub const U8: u8 = 0;
    pub const U32: u8 = 1;
    pub const I32: u8 = 2;
    pub const U64: u8 = 3;
    pub const F32: u8 = 4;
    pub const BOOL: u8 = 5;
    pub const STR: u8 = 6;
    pub const ARRAY: u8 = 7;
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    Bool(bool),
    Str(String),
    ArrU8(Vec<u8>),
    ArrU32(Vec<u32>),
    ArrI32(Vec<i32>),
    ArrF32(Vec<f32>),
    ArrStr(Vec<String>),
}

impl Value {
    /// The type name used in SPEC.md and in error messages (`u32`, `str`, `[f32]`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::Str(_) => "str",
            Value::ArrU8(_) => "[u8]",
            Value::ArrU32(_) => "[u32]",
            Value::ArrI32(_) => "[i32]",
            Value::ArrF32(_) => "[f32]",
            Value::ArrStr(_) => "[str]",
        }
    }

    /// Number of elements of an array value; `None` for scalars and strings.
    pub fn array_len(&self) -> Option<usize> {
        match self {
            Value::ArrU8(v) => Some(v.len()),
            Value::ArrU32(v) => Some(v.len()),
            Value::ArrI32(v) => Some(v.len()),
            Value::ArrF32(v) => Some(v.len()),
            Value::ArrStr(v) => Some(v.len()),
            _ => None,
        }
    }
}

/// The metadata of a file: `(key, value)` pairs in file order, keys unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
}

macro_rules! getters {
    ($($get:ident, $opt:ident, $variant:ident, $ty:ty, $expected:literal, |$v:ident| $out:expr;)*) => {$(
        #[doc = concat!("The `", $expected, "` value under `key`: `MissingKey` if absent, `WrongType` if of another type.")]
        pub fn $get(&self, key: &str) -> Result<$ty, FormatError> {
            self.$opt(key)?.ok_or_else(|| FormatError::MissingKey { key: key.to_string() })
        }

        #[doc = concat!("The `", $expected, "` value under `key`, `None` if absent, `WrongType` if of another type.")]
        pub fn $opt(&self, key: &str) -> Result<Option<$ty>, FormatError> {
            match self.get(key) {
                None => Ok(None),
                Some(Value::$variant($v)) => Ok(Some($out)),
                Some(other) => Err(FormatError::WrongType {
                    key: key.to_string(),
                    expected: $expected,
                    found: other.type_name(),
                }),
            }
        }
    )*};
}

impl Metadata {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `n` entries (allocation failure is an error).
    pub(crate) fn with_capacity(n: usize) -> Result<Self, FormatError> {
        Ok(Metadata {
            entries: crate::mem::try_vec(n)?,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Sets `key` to `value`, replacing an existing value in place or appending.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    /// Appends an entry whose key the caller has checked to be new.
    pub(crate) fn push_new(&mut self, key: String, value: Value) {
        self.entries.push((key, value));
    }

    getters! {
        get_u8, opt_u8, U8, u8, "u8", |v| *v;
        get_u32, opt_u32, U32, u32, "u32", |v| *v;
        get_i32, opt_i32, I32, i32, "i32", |v| *v;
        get_u64, opt_u64, U64, u64, "u64", |v| *v;
        get_f32, opt_f32, F32, f32, "f32", |v| *v;
        get_bool, opt_bool, Bool, bool, "bool", |v| *v;
        get_str, opt_str, Str, &str, "str", |v| v.as_str();
        get_arr_u8, opt_arr_u8, ArrU8, &[u8], "[u8]", |v| v.as_slice();
        get_arr_u32, opt_arr_u32, ArrU32, &[u32], "[u32]", |v| v.as_slice();
        get_arr_i32, opt_arr_i32, ArrI32, &[i32], "[i32]", |v| v.as_slice();
        get_arr_f32, opt_arr_f32, ArrF32, &[f32], "[f32]", |v| v.as_slice();
        get_arr_str, opt_arr_str, ArrStr, &[String], "[str]", |v| v.as_slice();
    }
}

/// Keys of the tokenizer's special token ids (i32, -1 = absent).
const SPECIAL_ID_KEYS: [&str; 4] = [
    "tokenizer.bos_id",
    "tokenizer.eos_id",
    "tokenizer.unk_id",
    "tokenizer.pad_id",
];

/// Checks the tokenizer entries the format itself guarantees: vocabulary size within
/// [`crate::limits::MAX_VOCAB`], per-token arrays as long as the vocabulary, and every
/// special token id inside it.
pub(crate) fn validate_tokenizer(meta: &Metadata) -> Result<(), FormatError> {
    let tokens = meta.opt_arr_str("tokenizer.tokens")?;
    let n_vocab = match tokens {
        Some(t) => u64::try_from(t.len()).unwrap_or(u64::MAX),
        None => 0,
    };
    if n_vocab > crate::limits::MAX_VOCAB {
        return Err(FormatError::LimitExceeded {
            field: "vocabulary size (length of tokenizer.tokens)".to_string(),
            value: n_vocab,
            limit: crate::limits::MAX_VOCAB,
        });
    }
    let per_token = [
        (
            "tokenizer.scores",
            meta.opt_arr_f32("tokenizer.scores")?.map(<[f32]>::len),
        ),
        (
            "tokenizer.token_types",
            meta.opt_arr_u8("tokenizer.token_types")?.map(<[u8]>::len),
        ),
    ];
    let eot = meta.opt_arr_i32("tokenizer.eot_ids")?.unwrap_or(&[]);
    let mut ids = crate::mem::try_vec(SPECIAL_ID_KEYS.len() + eot.len())?;
    for key in SPECIAL_ID_KEYS {
        if let Some(id) = meta.opt_i32(key)? {
            if id != -1 {
                ids.push((key, id));
            }
        }
    }
    ids.extend(eot.iter().map(|&id| ("tokenizer.eot_ids", id)));
    let needs_tokens = !ids.is_empty() || per_token.iter().any(|(_, len)| len.is_some());
    if tokens.is_none() && needs_tokens {
        return Err(FormatError::MissingKey {
            key: "tokenizer.tokens".to_string(),
        });
    }
    for (key, len) in per_token {
        if let Some(len) = len {
            let len = u64::try_from(len).unwrap_or(u64::MAX);
            if len != n_vocab {
                return Err(FormatError::LengthMismatch {
                    key: key.to_string(),
                    len,
                    expected: n_vocab,
                });
            }
        }
    }
    check_token_lengths(tokens.unwrap_or(&[]), meta.opt_arr_u8("tokenizer.token_types")?)?;
    for (key, id) in ids {
        if u64::try_from(id).map_or(true, |id| id >= n_vocab) {
            return Err(FormatError::BadTokenId {
                key: key.to_string(),
                id: i64::from(id),
                n_vocab,
            });
        }
    }
    Ok(())
}

/// Token types whose texts are recognised inside input text (unknown, control,
/// user-defined), as `tokenizer.token_types` codes.
const SPECIAL_TYPES: [u8; 3] = [2, 3, 4];

/// `MAX_TOKEN_LEN` for every token; `MAX_SPECIAL_TOKEN_LEN` and `MAX_SPECIAL_BYTES` for the
/// special ones (`types[i]` is token i's type; missing entries count as normal). The reader
/// and writer apply it; so does the runtime's tokenizer, which can be built without them.
pub fn check_token_lengths(tokens: &[String], types: Option<&[u8]>) -> Result<(), FormatError> {
    use crate::limits::{MAX_SPECIAL_BYTES, MAX_SPECIAL_TOKEN_LEN, MAX_TOKEN_LEN};
    let limit = |field: String, value: usize, limit: u64| -> Result<(), FormatError> {
        let value = u64::try_from(value).unwrap_or(u64::MAX);
        if value > limit {
            return Err(FormatError::LimitExceeded {
                field,
                value,
                limit,
            });
        }
        Ok(())
    };
    let mut special_bytes = 0usize;
    for (i, t) in tokens.iter().enumerate() {
        limit(format!("length of tokenizer.tokens[{i}]"), t.len(), MAX_TOKEN_LEN)?;
        if types.and_then(|ty| ty.get(i)).is_some_and(|ty| SPECIAL_TYPES.contains(ty)) {
            limit(
                format!("length of special token tokenizer.tokens[{i}]"),
                t.len(),
                MAX_SPECIAL_TOKEN_LEN,
            )?;
            special_bytes = special_bytes.saturating_add(t.len());
        }
    }
    limit(
        "total length of the special tokens".to_string(),
        special_bytes,
        MAX_SPECIAL_BYTES,
    )
}
