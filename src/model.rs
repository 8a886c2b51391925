//! Model loader.
