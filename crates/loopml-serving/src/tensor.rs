//! Typed tensors as the protocols carry them (Open Inference Protocol datatypes), and the
//! conversions to and from ONNX Runtime values.

use serde::Serialize;

use crate::error::{Error, Result};

/// Element types, named as the Open Inference Protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DataType {
    /// `BOOL`
    #[serde(rename = "BOOL")]
    Bool,
    /// `UINT8`
    #[serde(rename = "UINT8")]
    U8,
    /// `INT32`
    #[serde(rename = "INT32")]
    I32,
    /// `INT64`
    #[serde(rename = "INT64")]
    I64,
    /// `FP32`
    #[serde(rename = "FP32")]
    F32,
    /// `FP64`
    #[serde(rename = "FP64")]
    F64,
    /// `BYTES` (UTF-8 strings)
    #[serde(rename = "BYTES")]
    Bytes,
}

impl DataType {
    /// The protocol name (`FP32`, …).
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses a protocol name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "BOOL" => DataType::Bool,
            "UINT8" => DataType::U8,
            "INT32" => DataType::I32,
            "INT64" => DataType::I64,
            "FP32" => DataType::F32,
            "FP64" => DataType::F64,
            "BYTES" => DataType::Bytes,
            _ => return None,
        })
    }

    fn from_ort(t: ort::value::TensorElementType) -> Option<Self> {
        use ort::value::TensorElementType as T;
        Some(match t {
            T::Bool => DataType::Bool,
            T::Uint8 => DataType::U8,
            T::Int32 => DataType::I32,
            T::Int64 => DataType::I64,
            T::Float32 => DataType::F32,
            T::Float64 => DataType::F64,
            T::String => DataType::Bytes,
            _ => return None,
        })
    }
}

/// A tensor's elements, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Booleans.
    Bool(Vec<bool>),
    /// Unsigned bytes.
    U8(Vec<u8>),
    /// 32-bit integers.
    I32(Vec<i32>),
    /// 64-bit integers.
    I64(Vec<i64>),
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit floats.
    F64(Vec<f64>),
    /// Strings.
    Bytes(Vec<String>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::U8(_) => DataType::U8,
            TensorData::I32(_) => DataType::I32,
            TensorData::I64(_) => DataType::I64,
            TensorData::F32(_) => DataType::F32,
            TensorData::F64(_) => DataType::F64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    /// The elements as JSON values (for protocol answers).
    pub fn to_json(&self) -> Vec<serde_json::Value> {
        use serde_json::Value;
        let num = |f: f64| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number);
        match self {
            TensorData::Bool(v) => v.iter().map(|&b| Value::Bool(b)).collect(),
            TensorData::U8(v) => v.iter().map(|&x| Value::from(x)).collect(),
            TensorData::I32(v) => v.iter().map(|&x| Value::from(x)).collect(),
            TensorData::I64(v) => v.iter().map(|&x| Value::from(x)).collect(),
            TensorData::F32(v) => v.iter().map(|&x| num(f64::from(x))).collect(),
            TensorData::F64(v) => v.iter().map(|&x| num(x)).collect(),
            TensorData::Bytes(v) => v.iter().map(|s| Value::from(s.as_str())).collect(),
        }
    }

    /// Converts numbers between numeric types (as Triton and MLflow accept JSON numbers for any
    /// numeric input); strings convert only to strings. `what` names the input in errors.
    pub fn cast(self, to: DataType, what: &str) -> Result<TensorData> {
        if self.datatype() == to {
            return Ok(self);
        }
        let from = self.datatype();
        let numbers: Vec<f64> = match self {
            TensorData::Bool(v) => v.into_iter().map(|b| f64::from(u8::from(b))).collect(),
            TensorData::U8(v) => v.into_iter().map(f64::from).collect(),
            TensorData::I32(v) => v.into_iter().map(f64::from).collect(),
            TensorData::I64(v) => v.into_iter().map(|x| x as f64).collect(),
            TensorData::F32(v) => v.into_iter().map(f64::from).collect(),
            TensorData::F64(v) => v,
            TensorData::Bytes(_) => {
                return Err(Error::InvalidInput(format!(
                    "input '{what}': expected {} values, got strings",
                    to.name()
                )));
            }
        };
        let integral = |x: f64, lo: f64, hi: f64| -> Result<f64> {
            if x.fract() != 0.0 || x < lo || x > hi {
                Err(Error::InvalidInput(format!(
                    "input '{what}': {x} is not a valid {} value",
                    to.name()
                )))
            } else {
                Ok(x)
            }
        };
        Ok(match to {
            DataType::F32 => TensorData::F32(numbers.into_iter().map(|x| x as f32).collect()),
            DataType::F64 => TensorData::F64(numbers),
            DataType::I64 => TensorData::I64(
                numbers
                    .into_iter()
                    .map(|x| integral(x, -9.007_199_254_740_992e15, 9.007_199_254_740_992e15))
                    .map(|r| r.map(|x| x as i64))
                    .collect::<Result<_>>()?,
            ),
            DataType::I32 => TensorData::I32(
                numbers
                    .into_iter()
                    .map(|x| integral(x, f64::from(i32::MIN), f64::from(i32::MAX)))
                    .map(|r| r.map(|x| x as i32))
                    .collect::<Result<_>>()?,
            ),
            DataType::U8 => TensorData::U8(
                numbers
                    .into_iter()
                    .map(|x| integral(x, 0.0, 255.0))
                    .map(|r| r.map(|x| x as u8))
                    .collect::<Result<_>>()?,
            ),
            DataType::Bool => TensorData::Bool(numbers.into_iter().map(|x| x != 0.0).collect()),
            DataType::Bytes => {
                return Err(Error::InvalidInput(format!(
                    "input '{what}': expected strings (BYTES), got {} values",
                    from.name()
                )));
            }
        })
    }
}

/// A named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Input or output name.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<i64>,
    /// Elements.
    pub data: TensorData,
}

impl Tensor {
    /// Checks that the shape holds exactly the elements given.
    pub fn check(&self) -> Result<()> {
        let mut n: i64 = 1;
        for &d in &self.shape {
            if d < 0 {
                return Err(Error::InvalidInput(format!(
                    "input '{}': negative dimension in shape {:?}",
                    self.name, self.shape
                )));
            }
            n = n.checked_mul(d).ok_or_else(|| {
                Error::InvalidInput(format!("input '{}': shape too large", self.name))
            })?;
        }
        if n as usize != self.data.len() {
            return Err(Error::InvalidInput(format!(
                "input '{}': shape {:?} holds {n} elements but {} were given",
                self.name,
                self.shape,
                self.data.len()
            )));
        }
        Ok(())
    }

    pub(crate) fn to_ort(&self) -> Result<ort::session::SessionInputValue<'_>> {
        let bad = |e: ort::Error| {
            Error::InvalidInput(format!(
                "input '{}': cannot build the tensor: {e}",
                self.name
            ))
        };
        // Numbers are lent to the runtime for the call (no copy); strings need its own tensor.
        let shape = self.shape.as_slice();
        use ort::value::{Tensor as T, TensorRef as R};
        Ok(match &self.data {
            TensorData::Bool(v) => R::from_array_view((shape, v.as_slice()))
                .map_err(bad)?
                .into(),
            TensorData::U8(v) => R::from_array_view((shape, v.as_slice()))
                .map_err(bad)?
                .into(),
            TensorData::I32(v) => R::from_array_view((shape, v.as_slice()))
                .map_err(bad)?
                .into(),
            TensorData::I64(v) => R::from_array_view((shape, v.as_slice()))
                .map_err(bad)?
                .into(),
            TensorData::F32(v) => R::from_array_view((shape, v.as_slice()))
                .map_err(bad)?
                .into(),
            TensorData::F64(v) => R::from_array_view((shape, v.as_slice()))
                .map_err(bad)?
                .into(),
            TensorData::Bytes(v) => T::from_string_array((shape.to_vec(), v.as_slice()))
                .map_err(bad)?
                .into(),
        })
    }

    /// Reads an output value: a tensor, or a sequence of maps (scikit-learn's ZipMap), which
    /// becomes an `FP32` tensor `[rows, classes]` with the class labels, in key order.
    pub(crate) fn from_ort(
        name: &str,
        value: &ort::value::DynValue,
    ) -> Result<(Tensor, Option<Vec<String>>)> {
        use ort::value::ValueType;
        let fail = |e: ort::Error| Error::Inference(format!("output '{name}': {e}"));
        match value.dtype() {
            ValueType::Tensor { ty, .. } => {
                let ty = DataType::from_ort(*ty).ok_or_else(|| {
                    Error::Inference(format!(
                        "output '{name}': element type {ty:?} is not supported"
                    ))
                })?;
                macro_rules! prim {
                    ($t:ty, $variant:ident) => {{
                        let (shape, data) = value.try_extract_tensor::<$t>().map_err(fail)?;
                        (shape.to_vec(), TensorData::$variant(data.to_vec()))
                    }};
                }
                let (shape, data) = match ty {
                    DataType::Bool => prim!(bool, Bool),
                    DataType::U8 => prim!(u8, U8),
                    DataType::I32 => prim!(i32, I32),
                    DataType::I64 => prim!(i64, I64),
                    DataType::F32 => prim!(f32, F32),
                    DataType::F64 => prim!(f64, F64),
                    DataType::Bytes => {
                        let (shape, data) = value.try_extract_strings().map_err(fail)?;
                        (shape.to_vec(), TensorData::Bytes(data))
                    }
                };
                Ok((
                    Tensor {
                        name: name.to_string(),
                        shape,
                        data,
                    },
                    None,
                ))
            }
            ValueType::Sequence(inner) if matches!(**inner, ValueType::Map { .. }) => {
                let ValueType::Map { key, .. } = &**inner else {
                    return Err(Error::Inference(format!(
                        "output '{name}': unexpected type"
                    )));
                };
                let maps = value
                    .try_extract_sequence::<ort::value::DynMapValueType>()
                    .map_err(fail)?;
                let mut rows: Vec<Vec<(String, f32)>> = Vec::with_capacity(maps.len());
                for m in &maps {
                    let mut kv: Vec<(String, f32)> = match key {
                        ort::value::TensorElementType::String => {
                            m.try_extract_key_values::<String, f32>().map_err(fail)?
                        }
                        _ => {
                            let mut ints = m.try_extract_key_values::<i64, f32>().map_err(fail)?;
                            ints.sort_by_key(|(k, _)| *k);
                            ints.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                        }
                    };
                    if matches!(key, ort::value::TensorElementType::String) {
                        kv.sort_by(|a, b| a.0.cmp(&b.0));
                    }
                    rows.push(kv);
                }
                let labels: Vec<String> = rows
                    .first()
                    .map(|r| r.iter().map(|(k, _)| k.clone()).collect())
                    .unwrap_or_default();
                let mut data = Vec::with_capacity(rows.len() * labels.len());
                for r in &rows {
                    if r.len() != labels.len() {
                        return Err(Error::Inference(format!(
                            "output '{name}': rows have different class sets"
                        )));
                    }
                    data.extend(r.iter().map(|(_, v)| *v));
                }
                Ok((
                    Tensor {
                        name: name.to_string(),
                        shape: vec![rows.len() as i64, labels.len() as i64],
                        data: TensorData::F32(data),
                    },
                    Some(labels),
                ))
            }
            other => Err(Error::Inference(format!(
                "output '{name}': values of type {other:?} are not supported"
            ))),
        }
    }
}

/// What a model input or output looks like.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorSpec {
    /// Name.
    pub name: String,
    /// Element type (`FP32` also for ZipMap outputs, which become `[rows, classes]`).
    pub datatype: DataType,
    /// Dimensions; -1 where any size is accepted.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    pub(crate) fn from_outlet(o: &ort::value::Outlet) -> Result<Self> {
        use ort::value::ValueType;
        match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
                name: o.name().to_string(),
                datatype: DataType::from_ort(*ty).ok_or_else(|| {
                    Error::Model(format!(
                        "'{}' has element type {ty:?}, which loopml does not serve",
                        o.name()
                    ))
                })?,
                shape: shape.to_vec(),
            }),
            ValueType::Sequence(inner) if matches!(**inner, ValueType::Map { .. }) => {
                Ok(TensorSpec {
                    name: o.name().to_string(),
                    datatype: DataType::F32,
                    shape: vec![-1, -1],
                })
            }
            other => Err(Error::Model(format!(
                "'{}' has type {other:?}, which loopml does not serve",
                o.name()
            ))),
        }
    }

    /// Whether a tensor of this shape fits (same rank; equal where the spec is fixed).
    pub fn accepts(&self, shape: &[i64]) -> bool {
        self.shape.len() == shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(&want, &got)| want < 0 || want == got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_numbers_and_refuses_strings() {
        let t = TensorData::F64(vec![1.0, 2.5])
            .cast(DataType::F32, "x")
            .unwrap();
        assert_eq!(t, TensorData::F32(vec![1.0, 2.5]));
        let i = TensorData::F64(vec![3.0]).cast(DataType::I64, "x").unwrap();
        assert_eq!(i, TensorData::I64(vec![3]));
        let err = TensorData::F64(vec![3.5])
            .cast(DataType::I64, "age")
            .unwrap_err();
        assert!(err.to_string().contains("'age'"), "{err}");
        let err = TensorData::Bytes(vec!["a".into()])
            .cast(DataType::F32, "city")
            .unwrap_err();
        assert!(err.to_string().contains("'city'"), "{err}");
        assert!(
            TensorData::F32(vec![1.0])
                .cast(DataType::Bytes, "s")
                .is_err()
        );
    }

    #[test]
    fn shapes_are_checked() {
        let t = Tensor {
            name: "x".into(),
            shape: vec![2, 2],
            data: TensorData::F32(vec![1.0; 3]),
        };
        assert!(t.check().unwrap_err().to_string().contains("holds 4"));
        let spec = TensorSpec {
            name: "x".into(),
            datatype: DataType::F32,
            shape: vec![-1, 4],
        };
        assert!(spec.accepts(&[10, 4]));
        assert!(!spec.accepts(&[10, 3]));
        assert!(!spec.accepts(&[4]));
    }
}
