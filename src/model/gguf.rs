//! A GGUF file opened for loading: typed metadata lookups and tensor reads whose errors name
//! the file and the key, so a malformed file stops start-up with one clear line.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;

use super::files::LoadError;

pub struct Gguf {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl Gguf {
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let file =
            File::open(path).map_err(|e| LoadError::new(path, format!("cannot open: {e}")))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader)
            .map_err(|e| LoadError::new(path, format!("not a valid GGUF file: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn error(&self, message: impl Into<String>) -> LoadError {
        LoadError::new(&self.path, message)
    }

    pub fn value(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub fn string(&self, key: &str) -> Result<&str, LoadError> {
        self.value(key)
            .ok_or_else(|| self.error(format!("metadata key {key} is missing")))?
            .to_string()
            .map(String::as_str)
            .map_err(|_| self.error(format!("metadata key {key} is not a string")))
    }

    pub fn opt_string(&self, key: &str) -> Option<&str> {
        self.value(key)?.to_string().ok().map(String::as_str)
    }

    /// An unsigned integer of any width.
    pub fn usize(&self, key: &str) -> Result<usize, LoadError> {
        self.opt_usize(key)?
            .ok_or_else(|| self.error(format!("metadata key {key} is missing")))
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>, LoadError> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        let n = match value {
            Value::U8(v) => Some(u64::from(*v)),
            Value::U16(v) => Some(u64::from(*v)),
            Value::U32(v) => Some(u64::from(*v)),
            Value::U64(v) => Some(*v),
            Value::I8(v) => u64::try_from(*v).ok(),
            Value::I16(v) => u64::try_from(*v).ok(),
            Value::I32(v) => u64::try_from(*v).ok(),
            Value::I64(v) => u64::try_from(*v).ok(),
            _ => None,
        };
        n.and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| self.error(format!("metadata key {key} is not a non-negative integer")))
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, LoadError> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        match value {
            Value::F32(v) => Ok(Some(*v)),
            Value::F64(v) => Ok(Some(*v as f32)),
            _ => Err(self.error(format!("metadata key {key} is not a number"))),
        }
    }

    pub fn opt_bool(&self, key: &str) -> Option<bool> {
        self.value(key)?.to_bool().ok()
    }

    /// An array of strings (the vocabulary, the merges).
    pub fn strings(&self, key: &str) -> Result<Vec<&str>, LoadError> {
        self.array(key)?
            .iter()
            .map(|v| v.to_string().map(String::as_str))
            .collect::<Result<_, _>>()
            .map_err(|_| self.error(format!("metadata key {key} is not an array of strings")))
    }

    pub fn opt_f32s(&self, key: &str) -> Result<Option<Vec<f32>>, LoadError> {
        if self.value(key).is_none() {
            return Ok(None);
        }
        self.array(key)?
            .iter()
            .map(|v| v.to_f32())
            .collect::<Result<_, _>>()
            .map(Some)
            .map_err(|_| self.error(format!("metadata key {key} is not an array of floats")))
    }

    pub fn opt_i32s(&self, key: &str) -> Result<Option<Vec<i32>>, LoadError> {
        if self.value(key).is_none() {
            return Ok(None);
        }
        self.array(key)?
            .iter()
            .map(|v| v.to_i32().or_else(|_| v.to_u32().map(|u| u as i32)))
            .collect::<Result<_, _>>()
            .map(Some)
            .map_err(|_| self.error(format!("metadata key {key} is not an array of integers")))
    }

    fn array(&self, key: &str) -> Result<&Vec<Value>, LoadError> {
        self.value(key)
            .ok_or_else(|| self.error(format!("metadata key {key} is missing")))?
            .to_vec()
            .map_err(|_| self.error(format!("metadata key {key} is not an array")))
    }

    /// Reads one tensor and checks its shape (GGUF order reversed, i.e. `[rows, cols]`).
    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor, LoadError> {
        if !self.has_tensor(name) {
            return Err(self.error(format!("tensor {name} is missing")));
        }
        let tensor = self
            .content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| LoadError::new(&self.path, format!("tensor {name}: {e}")))?;
        if tensor.shape().dims() != shape {
            return Err(self.error(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                tensor.shape().dims()
            )));
        }
        Ok(tensor)
    }

    /// A small f32 vector (a norm's weights), dequantized.
    pub fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>, LoadError> {
        let tensor = self.tensor(name, &[len])?;
        tensor
            .dequantize(&Device::Cpu)
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| self.error(format!("tensor {name}: {e}")))
    }
}
