//! `--device auto|cpu|cuda[:N]`: where the model runs, parsed from the flag and opened once.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// The device asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when this build has CUDA and a GPU answers; otherwise the CPU.
    #[default]
    Auto,
    Cpu,
    /// One CUDA device, by ordinal.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|ordinal| ordinal.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("`{text}` is not a device: use auto, cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// Whether this binary was built with `--features cuda`.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

impl DeviceChoice {
    /// Refuses, before anything loads, a CUDA device this build cannot drive.
    pub fn check_supported(self) -> Result<(), String> {
        match self {
            Self::Cuda(_) if !CUDA_BUILT => Err(format!(
                "--device {self}: this wick was built without CUDA; rebuild with \
                 `cargo build --release --features cuda` or use --device cpu"
            )),
            _ => Ok(()),
        }
    }

    /// Opens the device. `Auto` falls back to the CPU with a log line; an explicit CUDA device
    /// that cannot be opened is an error, never a silent fallback.
    pub fn open(self) -> Result<Device, String> {
        self.check_supported()?;
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => Device::new_cuda(ordinal)
                .map_err(|e| format!("--device {self}: cannot open the CUDA device: {e}")),
            Self::Auto if CUDA_BUILT && candle_core::utils::cuda_is_available() => {
                match Device::new_cuda(0) {
                    Ok(device) => Ok(device),
                    Err(e) => {
                        tracing::warn!(error = %e, "CUDA device 0 unavailable, using the CPU");
                        Ok(Device::Cpu)
                    }
                }
            }
            Self::Auto => Ok(Device::Cpu),
        }
    }
}

/// How a device is named in logs, `/info` and `wick_build_info`: `cpu` or `cuda:N`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("CPU".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad}");
        }
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn the_cpu_always_opens() {
        assert_eq!(name(&DeviceChoice::Cpu.open().unwrap()), "cpu");
        if !CUDA_BUILT {
            assert_eq!(name(&DeviceChoice::Auto.open().unwrap()), "cpu");
            let err = DeviceChoice::Cuda(0).open().unwrap_err();
            assert!(err.contains("built without CUDA"), "{err}");
        }
    }
}
