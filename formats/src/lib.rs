//! The .pipit weight format.
