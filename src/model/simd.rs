//! Which vector instructions wick's own kernels use: the best this CPU has, detected once at
//! run time, capped by `WICK_SIMD` so that one machine can measure every path.
//!
//! `WICK_SIMD=avx2` on a CPU with AVX-512 runs exactly the kernels an AVX2-only CPU runs;
//! `WICK_SIMD=portable` runs the plain-Rust reference kernels.

use std::fmt;
use std::sync::OnceLock;

/// A set of vector instructions, ordered from least to most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Plain Rust, whatever the compiler makes of it.
    Portable,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// AVX-512 F, BW, DQ and VL, on top of AVX2.
    Avx512,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    fn parse(name: &str) -> Option<Level> {
        [Level::Portable, Level::Avx2, Level::Avx512]
            .into_iter()
            .find(|level| level.name() == name.trim().to_ascii_lowercase())
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The environment variable that caps [`level`].
pub const ENV: &str = "WICK_SIMD";

/// The level every kernel dispatches on: what the CPU has, no higher than `WICK_SIMD` asks.
/// An unknown `WICK_SIMD` is ignored here; [`check_env`] refuses it at start-up.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = requested().ok().flatten().unwrap_or(Level::Avx512);
        detected().min(cap)
    })
}

/// The level asked for in `WICK_SIMD`, if any; an error names the accepted values.
pub fn requested() -> Result<Option<Level>, String> {
    match std::env::var(ENV) {
        Err(_) => Ok(None),
        Ok(value) if value.trim().is_empty() || value.trim() == "auto" => Ok(None),
        Ok(value) => Level::parse(&value).map(Some).ok_or_else(|| {
            format!("{ENV}={value:?}: expected one of auto, avx512, avx2, portable")
        }),
    }
}

/// Refuses an unknown `WICK_SIMD` value: for the server's start-up checks.
pub fn check_env() -> Result<Level, String> {
    requested()?;
    Ok(level())
}

/// The most capable level this CPU runs.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let avx512 = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl");
        match (avx2, avx512) {
            (true, true) => Level::Avx512,
            (true, false) => Level::Avx2,
            _ => Level::Portable,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Level::Portable
    }
}

/// `fn $name(args) { body }` whose body is compiled three times — for AVX-512, for AVX2 + FMA,
/// and for the baseline — and run in the version [`level`] allows. The compiler
/// vectorizes each copy for its instructions.
macro_rules! simd_versions {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            $(#[$meta])*
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::model::simd::{level, Level};
                $(#[$meta])*
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                $(#[$meta])*
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                match level() {
                    // SAFETY: `level()` never names instructions this CPU lacks.
                    Level::Avx512 => return unsafe { avx512($($arg),*) },
                    Level::Avx2 => return unsafe { avx2($($arg),*) },
                    Level::Portable => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use simd_versions;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_by_capability() {
        for level in [Level::Portable, Level::Avx2, Level::Avx512] {
            assert_eq!(Level::parse(level.name()), Some(level));
        }
        assert_eq!(Level::parse(" AVX2 "), Some(Level::Avx2));
        assert_eq!(Level::parse("sse"), None);
        assert!(Level::Portable < Level::Avx2 && Level::Avx2 < Level::Avx512);
    }

    #[test]
    fn the_level_in_use_never_exceeds_the_cpu() {
        assert!(level() <= detected());
    }
}
