//! Hard limits the reader enforces before it trusts any count or length read from a file.
//! The writer enforces the same limits, so it never produces a file the reader rejects.

/// Largest header plus metadata/directory section (`64 + meta_len`), in bytes.
pub const MAX_HEADER_BYTES: u64 = 64 << 20;
/// Most tensors in one file.
pub const MAX_TENSORS: u64 = 1 << 16;
/// Most dimensions of one tensor.
pub const MAX_RANK: u64 = 4;
/// Longest tensor name, in bytes.
pub const MAX_NAME_LEN: u64 = 256;
/// Most metadata entries.
pub const MAX_META_ENTRIES: u64 = 4096;
/// Longest metadata key, in bytes.
pub const MAX_KEY_LEN: u64 = 256;
/// Longest string value (also each string in a string array), in bytes.
pub const MAX_STRING_LEN: u64 = 1 << 20;
/// Most elements of one array value.
pub const MAX_ARRAY_LEN: u64 = 1 << 22;
/// Largest vocabulary (`tokenizer.tokens` length).
pub const MAX_VOCAB: u64 = 1 << 20;
/// Longest token text (each string of `tokenizer.tokens`), in bytes.
pub const MAX_TOKEN_LEN: u64 = 1024;
/// Longest text of a special token (types 2 unknown, 3 control, 4 user-defined: the ones
/// recognised inside text), in bytes. Bounds the work per text position of the matcher.
pub const MAX_SPECIAL_TOKEN_LEN: u64 = 256;
/// Most bytes of all special tokens' texts together. Bounds the matcher's memory.
pub const MAX_SPECIAL_BYTES: u64 = 1 << 20;
