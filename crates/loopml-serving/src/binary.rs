//! The Open Inference Protocol's binary tensor data extension (what `tritonclient` sends by
//! default): the body is a JSON header of `Inference-Header-Content-Length` bytes followed by
//! each binary tensor's raw bytes, in input order. Numbers are little-endian; `BOOL` is one byte;
//! `BYTES` elements are a 4-byte little-endian length and the bytes.

use crate::error::{Error, Result};
use crate::tensor::{DataType, TensorData};

/// The header that carries the JSON part's length.
pub const HEADER: &str = "Inference-Header-Content-Length";

fn bad(msg: String) -> Error {
    Error::InvalidInput(msg)
}

/// Decodes one tensor's raw bytes.
pub fn decode(datatype: DataType, raw: &[u8], name: &str) -> Result<TensorData> {
    fn fixed<const N: usize, T>(raw: &[u8], name: &str, f: fn([u8; N]) -> T) -> Result<Vec<T>> {
        if !raw.len().is_multiple_of(N) {
            return Err(bad(format!(
                "input '{name}': {} bytes of binary data is not a whole number of {N}-byte \
                 elements",
                raw.len()
            )));
        }
        Ok(raw
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect())
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
        DataType::U8 => TensorData::U8(raw.to_vec()),
        DataType::I32 => TensorData::I32(fixed(raw, name, i32::from_le_bytes)?),
        DataType::I64 => TensorData::I64(fixed(raw, name, i64::from_le_bytes)?),
        DataType::F32 => TensorData::F32(fixed(raw, name, f32::from_le_bytes)?),
        DataType::F64 => TensorData::F64(fixed(raw, name, f64::from_le_bytes)?),
        DataType::Bytes => {
            let mut out = Vec::new();
            let mut rest = raw;
            while !rest.is_empty() {
                let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                    return Err(bad(format!(
                        "input '{name}': truncated BYTES element length"
                    )));
                };
                let len = u32::from_le_bytes(*len) as usize;
                if tail.len() < len {
                    return Err(bad(format!("input '{name}': truncated BYTES element")));
                }
                let (s, tail) = tail.split_at(len);
                out.push(String::from_utf8(s.to_vec()).map_err(|_| {
                    bad(format!("input '{name}': a BYTES element is not UTF-8 text"))
                })?);
                rest = tail;
            }
            TensorData::Bytes(out)
        }
    })
}

/// Encodes a tensor's elements as raw bytes.
pub fn encode(data: &TensorData) -> Vec<u8> {
    match data {
        TensorData::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bytes(v) => {
            let mut out = Vec::new();
            for s in v {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        let cases = [
            TensorData::Bool(vec![true, false]),
            TensorData::U8(vec![1, 255]),
            TensorData::I32(vec![-1, 7]),
            TensorData::I64(vec![i64::MIN, 3]),
            TensorData::F32(vec![1.5, -0.25]),
            TensorData::F64(vec![std::f64::consts::PI]),
            TensorData::Bytes(vec!["héllo".into(), String::new()]),
        ];
        for d in cases {
            assert_eq!(decode(d.datatype(), &encode(&d), "x").unwrap(), d);
        }
        assert!(decode(DataType::F32, &[0, 0, 0], "x").is_err());
        assert!(decode(DataType::Bytes, &[9, 0, 0, 0, b'a'], "x").is_err());
    }
}
