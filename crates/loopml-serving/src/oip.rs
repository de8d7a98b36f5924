//! Open Inference Protocol v2 wire types, read and written without building a JSON tree: the
//! request's `data` arrays (nested or flat) go straight into typed vectors, and the answer is
//! serialized straight from the output tensors.

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::tensor::{DataType, Tensor, TensorData};

/// An inference request (`POST /v2/models/{name}/infer`).
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    /// Caller's request id, echoed in the answer.
    #[serde(default)]
    pub id: Option<Value>,
    /// Request parameters.
    #[serde(default)]
    pub parameters: Option<RequestParameters>,
    /// Input tensors.
    pub inputs: Vec<InputTensor>,
    /// Outputs asked for (all when absent).
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// Request-level parameters loopml reads (others are accepted and ignored).
#[derive(Debug, Default, Deserialize)]
pub struct RequestParameters {
    /// Answer every output in binary form (tritonclient sets it when it names no outputs).
    #[serde(default)]
    pub binary_data_output: Option<bool>,
}

/// One input tensor of a request.
#[derive(Debug, Deserialize)]
pub struct InputTensor {
    /// Input name.
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// OIP datatype name.
    pub datatype: String,
    /// Per-input parameters.
    #[serde(default)]
    pub parameters: Option<InputParameters>,
    /// Elements, row-major, nested or flat (absent with the binary extension).
    #[serde(default)]
    pub data: Option<Flat>,
}

/// Per-input parameters loopml reads.
#[derive(Debug, Default, Deserialize)]
pub struct InputParameters {
    /// Bytes of this input in the binary part of the body.
    #[serde(default)]
    pub binary_data_size: Option<u64>,
}

/// An output the caller asks for.
#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Per-output parameters.
    #[serde(default)]
    pub parameters: Option<OutputParameters>,
}

/// Per-output parameters loopml reads.
#[derive(Debug, Default, Deserialize)]
pub struct OutputParameters {
    /// Answer this output in binary form.
    #[serde(default)]
    pub binary_data: Option<bool>,
}

impl InferRequest {
    /// Whether output `name` goes back in binary form: its own `binary_data`, else the request's
    /// `binary_data_output`.
    pub fn binary_output(&self, name: &str) -> bool {
        let all = self
            .parameters
            .as_ref()
            .and_then(|p| p.binary_data_output)
            .unwrap_or(false);
        self.outputs
            .as_ref()
            .and_then(|o| o.iter().find(|x| x.name == name))
            .and_then(|x| x.parameters.as_ref().and_then(|p| p.binary_data))
            .unwrap_or(all)
    }
}

/// A `data` array's elements, flattened, in the narrowest JSON kind that holds them all.
#[derive(Debug, Default, PartialEq)]
pub enum Flat {
    /// No elements.
    #[default]
    Empty,
    /// Integers only.
    Int(Vec<i64>),
    /// Numbers, at least one not an integer (or out of `i64` range).
    Float(Vec<f64>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Strings.
    Str(Vec<String>),
    /// Elements of different kinds: the first one that did not fit, as JSON.
    Mixed(String),
}

impl Flat {
    fn push_int(&mut self, x: i64) {
        match self {
            Flat::Empty => *self = Flat::Int(vec![x]),
            Flat::Int(v) => v.push(x),
            Flat::Float(v) => v.push(x as f64),
            Flat::Mixed(_) => {}
            _ => *self = Flat::Mixed(x.to_string()),
        }
    }

    fn push_float(&mut self, x: f64) {
        match self {
            Flat::Empty => *self = Flat::Float(vec![x]),
            Flat::Int(v) => {
                let mut f: Vec<f64> = v.iter().map(|&i| i as f64).collect();
                f.push(x);
                *self = Flat::Float(f);
            }
            Flat::Float(v) => v.push(x),
            Flat::Mixed(_) => {}
            _ => *self = Flat::Mixed(x.to_string()),
        }
    }

    fn push_bool(&mut self, x: bool) {
        match self {
            Flat::Empty => *self = Flat::Bool(vec![x]),
            Flat::Bool(v) => v.push(x),
            Flat::Mixed(_) => {}
            _ => *self = Flat::Mixed(x.to_string()),
        }
    }

    fn push_str(&mut self, x: &str) {
        match self {
            Flat::Empty => *self = Flat::Str(vec![x.to_string()]),
            Flat::Str(v) => v.push(x.to_string()),
            Flat::Mixed(_) => {}
            _ => *self = Flat::Mixed(format!("{x:?}")),
        }
    }

    /// The elements as `datatype`; `name` is the input, for errors.
    pub fn into_data(self, datatype: DataType, name: &str) -> Result<TensorData, Error> {
        let wrong = |v: &str| {
            Error::InvalidInput(format!(
                "input '{name}': {v} is not a {} value",
                datatype.name()
            ))
        };
        Ok(match (self, datatype) {
            (Flat::Mixed(v), _) => return Err(wrong(&v)),
            (Flat::Empty, DataType::Bytes) => TensorData::Bytes(Vec::new()),
            (Flat::Empty, DataType::Bool) => TensorData::Bool(Vec::new()),
            (Flat::Empty, dt) => TensorData::F64(Vec::new()).cast(dt, name)?,
            (Flat::Bool(v), DataType::Bool) => TensorData::Bool(v),
            (Flat::Str(v), DataType::Bytes) => TensorData::Bytes(v),
            (Flat::Int(v), DataType::F32) => {
                TensorData::F32(v.into_iter().map(|x| x as f32).collect())
            }
            (Flat::Int(v), DataType::F64) => {
                TensorData::F64(v.into_iter().map(|x| x as f64).collect())
            }
            (Flat::Float(v), DataType::F32) => {
                TensorData::F32(v.into_iter().map(|x| x as f32).collect())
            }
            (Flat::Float(v), DataType::F64) => TensorData::F64(v),
            (Flat::Int(v), DataType::I64) => TensorData::I64(v),
            (Flat::Int(v), dt @ (DataType::I32 | DataType::U8)) => {
                TensorData::I64(v).cast(dt, name)?
            }
            (Flat::Float(v), DataType::I64 | DataType::I32 | DataType::U8) => {
                let first = v
                    .iter()
                    .find(|x| x.fract() != 0.0 || x.abs() > 9.2e18)
                    .copied()
                    .unwrap_or(v.first().copied().unwrap_or(0.0));
                return Err(wrong(&first.to_string()));
            }
            (Flat::Bool(v), _) => {
                return Err(wrong(&v.first().copied().unwrap_or(false).to_string()));
            }
            (Flat::Str(v), _) => {
                return Err(wrong(&format!(
                    "{:?}",
                    v.first().map_or("", String::as_str)
                )));
            }
            (Flat::Int(v), _) => return Err(wrong(&v.first().copied().unwrap_or(0).to_string())),
            (Flat::Float(v), _) => {
                return Err(wrong(&v.first().copied().unwrap_or(0.0).to_string()));
            }
        })
    }
}

impl<'de> Deserialize<'de> for Flat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut flat = Flat::Empty;
        d.deserialize_any(Into(&mut flat, 0))?;
        Ok(flat)
    }
}

/// Nesting deeper than this is refused (a tensor has far fewer dimensions).
const MAX_DEPTH: usize = 32;

/// Collects one JSON value (a scalar or a nested array) into a [`Flat`].
struct Into<'a>(&'a mut Flat, usize);

impl<'de> DeserializeSeed<'de> for Into<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Into<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers, booleans or strings, in nested arrays")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push_bool(v);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push_int(v);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(i) => self.0.push_int(i),
            Err(_) => self.0.push_float(v as f64),
        }
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push_float(v);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.1 >= MAX_DEPTH {
            return Err(de::Error::custom("\"data\" is nested too deeply"));
        }
        while seq
            .next_element_seed(Into(&mut *self.0, self.1 + 1))?
            .is_some()
        {}
        Ok(())
    }
}

impl InputTensor {
    /// The tensor, its `data` read as its datatype, or `binary_data_size` bytes taken from the
    /// front of `binary`.
    pub fn into_tensor(self, binary: &mut &[u8]) -> Result<Tensor, Error> {
        let bad = |m: String| Error::InvalidInput(m);
        let name = self.name;
        let datatype = DataType::parse(&self.datatype).ok_or_else(|| {
            bad(format!(
                "input '{name}': datatype '{}' is not supported (BOOL, UINT8, INT32, INT64, FP32, \
                 FP64, BYTES)",
                self.datatype
            ))
        })?;
        let size = self.parameters.as_ref().and_then(|p| p.binary_data_size);
        let data = if let Some(size) = size {
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > binary.len() {
                return Err(bad(format!(
                    "input '{name}': binary_data_size {size} is more than the {} bytes left in \
                     the body",
                    binary.len()
                )));
            }
            let (raw, rest) = binary.split_at(size);
            *binary = rest;
            crate::binary::decode(datatype, raw, &name)?
        } else {
            self.data
                .ok_or_else(|| bad(format!("input '{name}': missing \"data\"")))?
                .into_data(datatype, &name)?
        };
        let t = Tensor {
            name,
            shape: self.shape,
            data,
        };
        t.check()?;
        Ok(t)
    }
}

/// An inference answer.
#[derive(Debug, Serialize)]
pub struct InferResponse<'a> {
    /// Model name.
    pub model_name: &'a str,
    /// Model version.
    pub model_version: &'a str,
    /// The request's id, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a Value>,
    /// Output tensors.
    pub outputs: Vec<OutputTensor<'a>>,
}

/// One output tensor of an answer.
#[derive(Debug, Serialize)]
pub struct OutputTensor<'a> {
    /// Output name.
    pub name: &'a str,
    /// OIP datatype name.
    pub datatype: &'static str,
    /// Shape.
    pub shape: &'a [i64],
    /// Elements, flat (absent when sent as binary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<JsonData<'a>>,
    /// `binary_data_size` and class `labels`, when there are any.
    #[serde(skip_serializing_if = "OutputTensorParameters::is_empty")]
    pub parameters: OutputTensorParameters<'a>,
}

/// Parameters of an output tensor.
#[derive(Debug, Default, Serialize)]
pub struct OutputTensorParameters<'a> {
    /// Bytes of this output in the binary part of the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary_data_size: Option<usize>,
    /// Class labels of a probabilities output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<&'a [String]>,
}

impl OutputTensorParameters<'_> {
    fn is_empty(&self) -> bool {
        self.binary_data_size.is_none() && self.labels.is_none()
    }
}

/// Tensor elements serialized as one flat JSON array (non-finite floats as `null`).
#[derive(Debug)]
pub struct JsonData<'a>(pub &'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn all<S: Serializer, T: Serialize>(
            s: S,
            items: impl ExactSizeIterator<Item = T>,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(items.len()))?;
            for x in items {
                seq.serialize_element(&x)?;
            }
            seq.end()
        }
        let finite = |x: f64| x.is_finite().then_some(x);
        match self.0 {
            TensorData::Bool(v) => all(s, v.iter()),
            TensorData::U8(v) => all(s, v.iter()),
            TensorData::I32(v) => all(s, v.iter()),
            TensorData::I64(v) => all(s, v.iter()),
            TensorData::F32(v) => all(s, v.iter().map(|&x| finite(f64::from(x)))),
            TensorData::F64(v) => all(s, v.iter().map(|&x| finite(x))),
            TensorData::Bytes(v) => all(s, v.iter()),
        }
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn flat(json: &str) -> Flat {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn nested_arrays_flatten_in_row_major_order() {
        assert_eq!(flat("[[1, 2], [3, 4]]"), Flat::Int(vec![1, 2, 3, 4]));
        assert_eq!(flat("[[1, 2.5], [3]]"), Flat::Float(vec![1.0, 2.5, 3.0]));
        assert_eq!(flat("[]"), Flat::Empty);
        assert_eq!(flat("7"), Flat::Int(vec![7]));
        assert_eq!(flat("[[true], [false]]"), Flat::Bool(vec![true, false]));
        assert_eq!(
            flat(r#"["a", ["b"]]"#),
            Flat::Str(vec!["a".into(), "b".into()])
        );
        assert_eq!(flat(r#"[1, "b"]"#), Flat::Mixed("\"b\"".into()));
        assert!(serde_json::from_str::<Flat>(r#"[{"a": 1}]"#).is_err());
        assert!(
            serde_json::from_str::<Flat>(&format!("{}1{}", "[".repeat(40), "]".repeat(40)))
                .is_err()
        );
    }

    #[test]
    fn elements_convert_to_the_datatype_or_say_which_value_does_not_fit() {
        let f32s = flat("[1, 2.5]").into_data(DataType::F32, "x").unwrap();
        assert_eq!(f32s, TensorData::F32(vec![1.0, 2.5]));
        let ints = flat("[1, 2]").into_data(DataType::I32, "x").unwrap();
        assert_eq!(ints, TensorData::I32(vec![1, 2]));
        let e = flat("[1, 2.5]").into_data(DataType::I64, "x").unwrap_err();
        assert!(e.to_string().contains("2.5 is not a INT64"), "{e}");
        let e = flat(r#"["a"]"#).into_data(DataType::F32, "x").unwrap_err();
        assert!(e.to_string().contains("\"a\" is not a FP32"), "{e}");
        let e = flat("[1, true]").into_data(DataType::F32, "x").unwrap_err();
        assert!(e.to_string().contains("true is not a FP32"), "{e}");
        assert_eq!(
            flat("[]").into_data(DataType::F32, "x").unwrap(),
            TensorData::F32(vec![])
        );
    }

    #[test]
    fn answers_serialize_like_the_protocol() {
        let data = TensorData::F32(vec![0.5, f32::NAN]);
        let labels = vec!["a".to_string(), "b".to_string()];
        let r = InferResponse {
            model_name: "m",
            model_version: "1",
            id: None,
            outputs: vec![OutputTensor {
                name: "p",
                datatype: "FP32",
                shape: &[1, 2],
                data: Some(JsonData(&data)),
                parameters: OutputTensorParameters {
                    binary_data_size: None,
                    labels: Some(&labels),
                },
            }],
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"model_name": "m", "model_version": "1", "outputs": [
                {"name": "p", "datatype": "FP32", "shape": [1, 2], "data": [0.5, null],
                 "parameters": {"labels": ["a", "b"]}}]})
        );
    }
}
