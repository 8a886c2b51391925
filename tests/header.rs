//! include/pipit.h, written by hand, checked against the Rust side.
//!
//! One table lists every function with its Rust signature. rustc checks each row against
//! `pipit::ffi` (the exported function must coerce to that type); the same row, spelled in
//! C, becomes a function pointer initialised from the header's declaration, which `cc
//! -Werror` rejects if the types differ. The C program also prints the size and the offset
//! and size of every field of every struct and the value of every constant, compared here
//! with `size_of`/`offset_of!` and the Rust constants. Finally the header's function list,
//! the table and the library's exported `pipit_*` symbols must be the same set.

mod clib;

use std::collections::BTreeSet;
use std::ffi::{c_char, c_int, c_void};
use std::fmt::Write as _;
use std::process::Command;

use clib::{lib_dir, root, run_ok, tmp_dir, Link, NATIVE_STATIC_LIBS};
use pipit::ffi::*;

/// The C spelling of a Rust type used across the ABI.
trait CType {
    /// An abstract declarator: `const char *`, `int32_t (*)(void)`.
    fn c() -> String;
    /// A declaration of `name` with this type.
    fn decl(name: &str) -> String {
        format!("{} {name}", Self::c())
    }
}

macro_rules! c_base {
    ($($t:ty => $c:literal),* $(,)?) => {$(
        impl CType for $t {
            fn c() -> String {
                $c.into()
            }
        }
    )*};
}

// `c_int` is `i32`: the header's `int` and `int32_t` are the same type on the platforms
// pipit supports, which the C compiler confirms below.
c_base! {
    () => "void", i32 => "int32_t", u32 => "uint32_t", u64 => "uint64_t", usize => "size_t",
    f32 => "float", f64 => "double", c_char => "char", c_void => "void",
    pipit_model => "pipit_model", pipit_session => "pipit_session",
    pipit_constraint => "pipit_constraint",
    pipit_model_info => "pipit_model_info", pipit_session_params => "pipit_session_params",
    pipit_sampler_params => "pipit_sampler_params", pipit_memory_report => "pipit_memory_report",
    pipit_chat_message => "pipit_chat_message",
}

impl<T: CType> CType for *const T {
    fn c() -> String {
        let t = T::c();
        if t.ends_with('*') {
            format!("{t}const *")
        } else {
            format!("const {t} *")
        }
    }
}

impl<T: CType> CType for *mut T {
    fn c() -> String {
        let t = T::c();
        if t.ends_with('*') {
            format!("{t}*")
        } else {
            format!("{t} *")
        }
    }
}

macro_rules! c_fn_ptr {
    ($($a:ident),*) => {
        impl<R: CType, $($a: CType),*> CType for unsafe extern "C" fn($($a),*) -> R {
            fn c() -> String {
                Self::decl("")
            }
            fn decl(name: &str) -> String {
                let args: Vec<String> = vec![$($a::c()),*];
                let args = if args.is_empty() { "void".to_string() } else { args.join(", ") };
                format!("{} (*{name})({args})", R::c())
            }
        }
        impl<R: CType, $($a: CType),*> CType for Option<unsafe extern "C" fn($($a),*) -> R> {
            fn c() -> String {
                <unsafe extern "C" fn($($a),*) -> R>::c()
            }
            fn decl(name: &str) -> String {
                <unsafe extern "C" fn($($a),*) -> R>::decl(name)
            }
        }
    };
}

c_fn_ptr!();
c_fn_ptr!(A);
c_fn_ptr!(A, B);
c_fn_ptr!(A, B, C);
c_fn_ptr!(A, B, C, D);
c_fn_ptr!(A, B, C, D, E);
c_fn_ptr!(A, B, C, D, E, F);
c_fn_ptr!(A, B, C, D, E, F, G);
c_fn_ptr!(A, B, C, D, E, F, G, H);
c_fn_ptr!(A, B, C, D, E, F, G, H, I);

/// Every function of the ABI with its signature: checked by rustc here, by cc in C.
macro_rules! functions {
    ($($name:ident: $ty:ty;)*) => {
        fn functions() -> Vec<(&'static str, String)> {
            vec![$({
                let _exported: $ty = pipit::ffi::$name;
                (stringify!($name), <$ty as CType>::decl(concat!("p_", stringify!($name))))
            }),*]
        }
    };
}

functions! {
    pipit_abi_version: unsafe extern "C" fn() -> u32;
    pipit_status_string: unsafe extern "C" fn(pipit_status) -> *const c_char;
    pipit_last_error: unsafe extern "C" fn() -> *const c_char;
    pipit_model_open: unsafe extern "C" fn(*const c_char, *mut *mut pipit_model) -> pipit_status;
    pipit_model_open_ex: unsafe extern "C" fn(*const c_char, u32, *mut *mut pipit_model) -> pipit_status;
    pipit_model_free: unsafe extern "C" fn(*mut pipit_model);
    pipit_model_get_info: unsafe extern "C" fn(*const pipit_model, *mut pipit_model_info) -> pipit_status;
    pipit_session_params_default: unsafe extern "C" fn(*mut pipit_session_params);
    pipit_memory_estimate:
        unsafe extern "C" fn(*const pipit_model, *const pipit_session_params, *mut pipit_memory_report) -> pipit_status;
    pipit_session_new:
        unsafe extern "C" fn(*const pipit_model, *const pipit_session_params, *mut *mut pipit_session) -> pipit_status;
    pipit_session_free: unsafe extern "C" fn(*mut pipit_session);
    pipit_session_reset: unsafe extern "C" fn(*mut pipit_session) -> pipit_status;
    pipit_session_n_past: unsafe extern "C" fn(*const pipit_session) -> u32;
    pipit_tokenize: unsafe extern "C" fn(
        *const pipit_model, *const c_char, usize, c_int, *mut i32, usize, *mut usize,
    ) -> pipit_status;
    pipit_token_to_piece:
        unsafe extern "C" fn(*const pipit_model, i32, *mut *const c_char, *mut usize) -> pipit_status;
    pipit_session_eval: unsafe extern "C" fn(*mut pipit_session, *const i32, usize) -> pipit_status;
    pipit_session_logits:
        unsafe extern "C" fn(*const pipit_session, *mut *const f32, *mut usize) -> pipit_status;
    pipit_sampler_params_default: unsafe extern "C" fn(*mut pipit_sampler_params);
    pipit_session_sample:
        unsafe extern "C" fn(*mut pipit_session, *const pipit_sampler_params, *mut i32) -> pipit_status;
    pipit_session_score: unsafe extern "C" fn(*mut pipit_session, *const i32, usize, *mut f64) -> pipit_status;
    pipit_generate: unsafe extern "C" fn(
        *mut pipit_session, *const c_char, usize, *const pipit_sampler_params, u32, pipit_token_callback, *mut c_void,
    ) -> pipit_status;
    pipit_session_cancel: unsafe extern "C" fn(*mut pipit_session) -> pipit_status;
    pipit_session_set_stop:
        unsafe extern "C" fn(*mut pipit_session, *const *const c_char, usize) -> pipit_status;
    pipit_session_stop_reason: unsafe extern "C" fn(*const pipit_session, *mut i32) -> pipit_status;
    pipit_session_truncate: unsafe extern "C" fn(*mut pipit_session, u32) -> pipit_status;
    pipit_session_save:
        unsafe extern "C" fn(*const pipit_session, *mut c_void, usize, *mut usize) -> pipit_status;
    pipit_session_load: unsafe extern "C" fn(*mut pipit_session, *const c_void, usize) -> pipit_status;
    pipit_choose: unsafe extern "C" fn(
        *mut pipit_session, *const c_char, usize, *const *const c_char, usize, *mut f64, *mut usize,
    ) -> pipit_status;
    pipit_session_new_ex: unsafe extern "C" fn(
        *const pipit_model, *const pipit_session_params, u32, *mut *mut pipit_session,
    ) -> pipit_status;
    pipit_beam_search: unsafe extern "C" fn(
        *mut pipit_session, *const c_char, usize, u32, f32, u32, *mut *const c_char, *mut usize, *mut f64,
    ) -> pipit_status;
    pipit_chat_render: unsafe extern "C" fn(
        *const pipit_model, *const c_char, *const pipit_chat_message, usize, *mut c_char, usize, *mut usize,
    ) -> pipit_status;
    pipit_model_adds_bos: unsafe extern "C" fn(*const pipit_model) -> c_int;
    pipit_constraint_regex:
        unsafe extern "C" fn(*const pipit_model, *const c_char, *mut *mut pipit_constraint) -> pipit_status;
    pipit_constraint_json_schema:
        unsafe extern "C" fn(*const pipit_model, *const c_char, *mut *mut pipit_constraint) -> pipit_status;
    pipit_constraint_gbnf:
        unsafe extern "C" fn(*const pipit_model, *const c_char, *mut *mut pipit_constraint) -> pipit_status;
    pipit_constraint_choices: unsafe extern "C" fn(
        *const pipit_model, *const *const c_char, usize, *mut *mut pipit_constraint,
    ) -> pipit_status;
    pipit_constraint_free: unsafe extern "C" fn(*mut pipit_constraint);
    pipit_session_set_constraint:
        unsafe extern "C" fn(*mut pipit_session, *const pipit_constraint) -> pipit_status;
}

/// The callback type, spelled from Rust, against the header's typedef.
fn callback_decl() -> String {
    <pipit_token_callback as CType>::decl("p_callback")
}

/// Size of a field, from an accessor.
fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    std::mem::size_of::<F>()
}

/// Every struct with every field: C lines that print layouts and the Rust values they must
/// print.
macro_rules! layouts {
    ($($t:ident { $($f:ident),* $(,)? })*) => {
        fn layouts() -> (String, Vec<String>) {
            let mut c = String::new();
            let mut rust = Vec::new();
            $(
                writeln!(c, "  printf(\"size {} %zu\\n\", sizeof({}));", stringify!($t), stringify!($t)).unwrap();
                rust.push(format!("size {} {}", stringify!($t), std::mem::size_of::<$t>()));
                $(
                    writeln!(
                        c,
                        "  printf(\"field {t}.{f} %zu %zu\\n\", offsetof({t}, {f}), sizeof((({t} *)0)->{f}));",
                        t = stringify!($t),
                        f = stringify!($f)
                    )
                    .unwrap();
                    rust.push(format!(
                        "field {}.{} {} {}",
                        stringify!($t),
                        stringify!($f),
                        std::mem::offset_of!($t, $f),
                        field_size(|s: &$t| &s.$f)
                    ));
                )*
            )*
            (c, rust)
        }
    };
}

layouts! {
    pipit_model_info { n_vocab, n_ctx_train, n_layer, d_model, bos_token, eos_token, weights_bytes, architecture, name }
    pipit_session_params { n_ctx, n_threads, kv_type, flags, memory_limit }
    pipit_sampler_params { temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed }
    pipit_memory_report { weights_mapped, kv_cache, scratch, total }
    pipit_chat_message { role, content }
}

/// Every constant of the header with its Rust value.
fn constants() -> Vec<(&'static str, i64)> {
    vec![
        ("PIPIT_ABI_VERSION", PIPIT_ABI_VERSION.into()),
        ("PIPIT_OK", PIPIT_OK.into()),
        (
            "PIPIT_ERR_INVALID_ARGUMENT",
            PIPIT_ERR_INVALID_ARGUMENT.into(),
        ),
        ("PIPIT_ERR_IO", PIPIT_ERR_IO.into()),
        ("PIPIT_ERR_FORMAT", PIPIT_ERR_FORMAT.into()),
        ("PIPIT_ERR_UNSUPPORTED", PIPIT_ERR_UNSUPPORTED.into()),
        ("PIPIT_ERR_OUT_OF_MEMORY", PIPIT_ERR_OUT_OF_MEMORY.into()),
        ("PIPIT_ERR_CONTEXT_FULL", PIPIT_ERR_CONTEXT_FULL.into()),
        (
            "PIPIT_ERR_BUFFER_TOO_SMALL",
            PIPIT_ERR_BUFFER_TOO_SMALL.into(),
        ),
        ("PIPIT_ERR_BUSY", PIPIT_ERR_BUSY.into()),
        ("PIPIT_ERR_CANCELLED", PIPIT_ERR_CANCELLED.into()),
        ("PIPIT_ERR_NUMERIC", PIPIT_ERR_NUMERIC.into()),
        ("PIPIT_ERR_INTERNAL", PIPIT_ERR_INTERNAL.into()),
        ("PIPIT_ERR_INCOMPLETE", PIPIT_ERR_INCOMPLETE.into()),
        ("PIPIT_OPEN_NO_MMAP", PIPIT_OPEN_NO_MMAP.into()),
        ("PIPIT_OPEN_VERIFY", PIPIT_OPEN_VERIFY.into()),
        ("PIPIT_KV_F16", PIPIT_KV_F16.into()),
        ("PIPIT_KV_F32", PIPIT_KV_F32.into()),
        ("PIPIT_KV_INT8", PIPIT_KV_INT8.into()),
        ("PIPIT_STOP_NONE", PIPIT_STOP_NONE.into()),
        ("PIPIT_STOP_END_OF_TEXT", PIPIT_STOP_END_OF_TEXT.into()),
        ("PIPIT_STOP_MAX_TOKENS", PIPIT_STOP_MAX_TOKENS.into()),
        ("PIPIT_STOP_STOP_STRING", PIPIT_STOP_STOP_STRING.into()),
        ("PIPIT_STOP_CALLBACK", PIPIT_STOP_CALLBACK.into()),
        ("PIPIT_STOP_CONTEXT_FULL", PIPIT_STOP_CONTEXT_FULL.into()),
        (
            "PIPIT_SESSION_CHECK_MEMORY",
            PIPIT_SESSION_CHECK_MEMORY.into(),
        ),
    ]
}

fn header() -> String {
    std::fs::read_to_string(root().join("include/pipit.h")).unwrap()
}

/// Identifiers `pipit_*` directly followed by `(`: the declared functions.
fn header_functions(h: &str) -> BTreeSet<String> {
    let b = h.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = h[i..].find("pipit_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let word_start =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        if word_start && b.get(end) == Some(&b'(') {
            out.insert(h[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The `PIPIT_*` names the header defines (enumerators and macros, not the include guard).
fn header_constants(h: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for part in h.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if part.starts_with("PIPIT_") && !part.ends_with('_') && part != "PIPIT_H" {
            out.insert(part.to_string());
        }
    }
    out
}

/// The C program: every function assigned to a pointer of the table's type, every layout
/// and constant printed.
fn c_program() -> String {
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"pipit.h\"\n\nint main(void) {\n",
    );
    for (name, decl) in functions() {
        writeln!(c, "  {decl} = {name};").unwrap();
        writeln!(c, "  printf(\"fn {name} %d\\n\", p_{name} != NULL);").unwrap();
    }
    writeln!(c, "  {} = (pipit_token_callback)0;", callback_decl()).unwrap();
    writeln!(
        c,
        "  pipit_token_callback p_typedef = p_callback;\n  (void)p_typedef;"
    )
    .unwrap();
    let (layout_c, _) = layouts();
    c += &layout_c;
    for (name, _) in constants() {
        writeln!(c, "  printf(\"const {name} %lld\\n\", (long long){name});").unwrap();
    }
    c += "  return 0;\n}\n";
    c
}

fn expected_output() -> Vec<String> {
    let mut lines: Vec<String> = functions()
        .iter()
        .map(|(n, _)| format!("fn {n} 1"))
        .collect();
    lines.extend(layouts().1);
    lines.extend(constants().iter().map(|(n, v)| format!("const {n} {v}")));
    lines
}

#[test]
fn the_table_covers_exactly_the_header() {
    let h = header();
    let table: BTreeSet<String> = functions().iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(header_functions(&h), table, "functions: header vs table");
    assert_eq!(table.len(), 38);
    let consts: BTreeSet<String> = constants().iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(header_constants(&h), consts, "constants: header vs table");
}

#[test]
fn the_header_compiles_as_c_and_cxx_without_warnings() {
    let dir = tmp_dir();
    let src = dir.join("header_only.c");
    std::fs::write(
        &src,
        "#include \"pipit.h\"\n#include \"pipit.h\"\nint main(void) { return PIPIT_OK; }\n",
    )
    .unwrap();
    let inc = root().join("include");
    for (cc, std) in [
        ("cc", "-std=c99"),
        ("cc", "-std=c11"),
        ("c++", "-std=c++11"),
    ] {
        let mut cmd = Command::new(cc);
        cmd.args([
            std,
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
        ])
        .arg("-I")
        .arg(&inc);
        if cc == "c++" {
            cmd.args(["-x", "c++"]);
        }
        run_ok(cmd.arg(&src));
    }
}

#[test]
fn signatures_layouts_and_constants_agree_with_rust() {
    let dir = tmp_dir();
    let src = dir.join("header_check.c");
    std::fs::write(&src, c_program()).unwrap();
    let libs = lib_dir();
    for link in Link::BOTH {
        let exe = dir.join(format!("header_check-{}", link.name()));
        let mut cmd = Command::new("cc");
        cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
            .arg("-I")
            .arg(root().join("include"))
            .arg(&src)
            .arg("-o")
            .arg(&exe);
        match link {
            Link::Shared => {
                cmd.arg("-L")
                    .arg(&libs)
                    .arg("-lpipit")
                    .arg(format!("-Wl,-rpath,{}", libs.display()));
            }
            Link::Static => {
                cmd.arg(libs.join("libpipit.a")).args(NATIVE_STATIC_LIBS);
            }
        }
        run_ok(&mut cmd);
        let out = run_ok(Command::new(&exe).env_remove("LD_LIBRARY_PATH"));
        let got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(
            got,
            expected_output(),
            "C ({}) and Rust disagree",
            link.name()
        );
    }
}

#[test]
fn the_library_exports_exactly_the_header_functions() {
    let so = lib_dir().join("libpipit.so");
    let out = run_ok(Command::new("nm").args(["-D", "--defined-only"]).arg(&so));
    let exported: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("pipit_"))
        .map(str::to_string)
        .collect();
    assert_eq!(exported, header_functions(&header()));
}
