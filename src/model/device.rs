//! Where sessions run: the CPU, or a GPU through ONNX Runtime's CUDA execution provider.
//!
//! The spec says which kind of device (`[run] device`, [`Device`]) and which GPU; an
//! [`ExecutionDevice`] is the device sessions are opened on, after any `fallback`. The two
//! meet here and nowhere else.

use ort::session::Session;

use super::runtime::{init_runtime, readable_ort_message};
use crate::spec::Device;

/// ONNX Runtime cannot open sessions on a device; `reason` is its own.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{device}: ONNX Runtime cannot use it: {reason}")]
pub struct DeviceError {
    pub device: ExecutionDevice,
    pub reason: String,
}

/// Where sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionDevice {
    Cpu,
    Cuda { device_id: u32 },
}

impl std::fmt::Display for ExecutionDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda { device_id } => write!(f, "cuda:{device_id}"),
        }
    }
}

impl ExecutionDevice {
    /// The device a spec's `[run] device` and `device_id` name.
    pub fn new(device: Device, device_id: u32) -> Self {
        match device {
            Device::Cpu => Self::Cpu,
            Device::Cuda => Self::Cuda { device_id },
        }
    }

    /// The kind of device, as a spec names it.
    pub fn kind(self) -> Device {
        match self {
            Self::Cpu => Device::Cpu,
            Self::Cuda { .. } => Device::Cuda,
        }
    }

    pub(super) fn providers(self) -> Vec<ort::ep::ExecutionProviderDispatch> {
        match self {
            Self::Cpu => Vec::new(),
            // Registration fails loudly: a session that quietly ran on the CPU instead would
            // be the silent fallback the spec forbids.
            Self::Cuda { device_id } => vec![
                ort::ep::CUDA::default()
                    .with_device_id(device_id as i32)
                    .build()
                    .error_on_failure(),
            ],
        }
    }

    /// Whether ONNX Runtime can open sessions on this device, and if not, its reason.
    pub fn check(self) -> Result<(), DeviceError> {
        if self == Self::Cpu {
            return Ok(());
        }
        let unavailable = |reason: String| DeviceError {
            device: self,
            reason,
        };
        let env = init_runtime(None).map_err(|e| unavailable(e.to_string()))?;
        Session::builder(env)
            .map_err(|e| unavailable(e.to_string()))?
            .with_execution_providers(self.providers())
            .map(drop)
            .map_err(|e| unavailable(readable_ort_message(e.to_string().trim_end())))
    }
}
