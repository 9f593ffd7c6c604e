//! A compact, self-describing binary encoding of state values (any `serde` type), with
//! JSON as the fallback for values written by earlier builds.
//!
//! An encoded value is [`MARK`] followed by one item. Each item starts with a tag byte:
//! integers are zigzag/LEB128 varints (0..=127 fit in the tag itself), strings and sequences
//! carry a varint length, structs are sequences of their fields (no field names), enum
//! variants are their index, and a string repeated within one value (map keys of buffered
//! records, say) is written once and then referred to by number. It is self-describing, so
//! `deserialize_any` (used by record values) works. JSON never starts with [`MARK`], so
//! [`decode`] reads both.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};
use std::fmt;

/// First byte of a binary-encoded value (never the first byte of a JSON text).
pub const MARK: u8 = 0xB1;

const T_UNIT: u8 = 0;
const T_NONE: u8 = 1;
const T_SOME: u8 = 2;
const T_FALSE: u8 = 3;
const T_TRUE: u8 = 4;
const T_INT: u8 = 5;
const T_UINT: u8 = 6;
const T_F64: u8 = 7;
const T_STR: u8 = 8;
const T_BYTES: u8 = 9;
const T_SEQ: u8 = 10;
const T_MAP: u8 = 11;
const T_VARIANT: u8 = 12;
const T_STR_REF: u8 = 13;
/// Tags at or above this carry a small non-negative integer (`tag - T_SMALL`).
const T_SMALL: u8 = 0x80;

/// Strings of these lengths are remembered for back-references.
const INTERN_LEN: std::ops::RangeInclusive<usize> = 2..=64;
/// At most this many strings are remembered per value.
const INTERN_MAX: usize = 64;

/// Encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
#[error("state value codec: {0}")]
pub struct CodecError(String);

impl ser::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError(msg.to_string())
    }
}

impl de::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError(msg.to_string())
    }
}

/// Appends `value`'s binary encoding ([`MARK`] first) to `out`.
pub fn encode_into<V: Serialize + ?Sized>(value: &V, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.push(MARK);
    let mut enc = Encoder {
        out,
        strings: Vec::new(),
    };
    value.serialize(&mut enc)
}

/// Decodes a value written by [`encode_into`], or JSON (values written by earlier builds).
pub fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, CodecError> {
    match bytes.split_first() {
        Some((&MARK, rest)) => {
            let mut dec = Decoder {
                input: rest,
                strings: Vec::new(),
            };
            let v = V::deserialize(&mut dec)?;
            if dec.input.is_empty() {
                Ok(v)
            } else {
                Err(CodecError(format!(
                    "{} trailing bytes after the value",
                    dec.input.len()
                )))
            }
        }
        _ => serde_json::from_slice(bytes).map_err(|e| CodecError(format!("JSON: {e}"))),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(i: i64) -> u64 {
    ((i << 1) ^ (i >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    /// (start, len) in `out` of the strings written so far that may be referred to.
    strings: Vec<(usize, usize)>,
}

impl Encoder<'_> {
    fn int(&mut self, i: i64) {
        if (0..i64::from(0x80u8)).contains(&i) {
            self.out.push(T_SMALL + i as u8);
        } else {
            self.out.push(T_INT);
            put_varint(self.out, zigzag(i));
        }
    }

    fn uint(&mut self, u: u64) {
        if u < 0x80 {
            self.out.push(T_SMALL + u as u8);
        } else {
            self.out.push(T_UINT);
            put_varint(self.out, u);
        }
    }

    fn string(&mut self, s: &str) {
        let b = s.as_bytes();
        if INTERN_LEN.contains(&b.len()) {
            let found = self
                .strings
                .iter()
                .position(|&(at, len)| len == b.len() && &self.out[at..at + len] == b);
            if let Some(i) = found {
                self.out.push(T_STR_REF);
                put_varint(self.out, i as u64);
                return;
            }
        }
        self.out.push(T_STR);
        put_varint(self.out, b.len() as u64);
        let at = self.out.len();
        self.out.extend_from_slice(b);
        if INTERN_LEN.contains(&b.len()) && self.strings.len() < INTERN_MAX {
            self.strings.push((at, b.len()));
        }
    }

    fn seq_header(
        &mut self,
        tag: u8,
        len: Option<usize>,
    ) -> Result<Compound<'_, Self>, CodecError> {
        let Some(len) = len else {
            return Err(CodecError(
                "sequences of unknown length are not supported".into(),
            ));
        };
        self.out.push(tag);
        put_varint(self.out, len as u64);
        Ok(Compound {
            enc: self,
            expected: len,
            written: 0,
        })
    }
}

/// A sequence, map or struct being written: checks that as many elements are written as the
/// header announced.
struct Compound<'a, E> {
    enc: &'a mut E,
    expected: usize,
    written: usize,
}

impl Compound<'_, Encoder<'_>> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CodecError> {
        self.written += 1;
        v.serialize(&mut *self.enc)
    }
    fn finish(self) -> Result<(), CodecError> {
        if self.written == self.expected {
            Ok(())
        } else {
            Err(CodecError(format!(
                "announced {} elements, wrote {}",
                self.expected, self.written
            )))
        }
    }
}

impl<'a, 'b> ser::Serializer for &'a mut Encoder<'b> {
    type Ok = ();
    type Error = CodecError;
    type SerializeSeq = Compound<'a, Encoder<'b>>;
    type SerializeTuple = Compound<'a, Encoder<'b>>;
    type SerializeTupleStruct = Compound<'a, Encoder<'b>>;
    type SerializeTupleVariant = Compound<'a, Encoder<'b>>;
    type SerializeMap = Compound<'a, Encoder<'b>>;
    type SerializeStruct = Compound<'a, Encoder<'b>>;
    type SerializeStructVariant = Compound<'a, Encoder<'b>>;

    fn serialize_bool(self, v: bool) -> Result<(), CodecError> {
        self.out.push(if v { T_TRUE } else { T_FALSE });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), CodecError> {
        self.int(i64::from(v));
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<(), CodecError> {
        self.int(i64::from(v));
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<(), CodecError> {
        self.int(i64::from(v));
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), CodecError> {
        self.int(v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), CodecError> {
        self.uint(u64::from(v));
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<(), CodecError> {
        self.uint(u64::from(v));
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<(), CodecError> {
        self.uint(u64::from(v));
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), CodecError> {
        self.uint(v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), CodecError> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), CodecError> {
        self.out.push(T_F64);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), CodecError> {
        self.string(v.encode_utf8(&mut [0u8; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), CodecError> {
        self.string(v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), CodecError> {
        self.out.push(T_BYTES);
        put_varint(self.out, v.len() as u64);
        self.out.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), CodecError> {
        self.out.push(T_NONE);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CodecError> {
        self.out.push(T_SOME);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), CodecError> {
        self.out.push(T_UNIT);
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CodecError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
    ) -> Result<(), CodecError> {
        self.out.push(T_VARIANT);
        put_varint(self.out, u64::from(index));
        self.serialize_unit()
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), CodecError> {
        self.out.push(T_VARIANT);
        put_varint(self.out, u64::from(index));
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, CodecError> {
        self.seq_header(T_SEQ, len)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, CodecError> {
        self.seq_header(T_SEQ, Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, CodecError> {
        self.seq_header(T_SEQ, Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, CodecError> {
        self.out.push(T_VARIANT);
        put_varint(self.out, u64::from(index));
        self.seq_header(T_SEQ, Some(len))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, CodecError> {
        self.seq_header(T_MAP, len)
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, CodecError> {
        self.seq_header(T_SEQ, Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, CodecError> {
        self.out.push(T_VARIANT);
        put_varint(self.out, u64::from(index));
        self.seq_header(T_SEQ, Some(len))
    }
}

impl ser::SerializeSeq for Compound<'_, Encoder<'_>> {
    type Ok = ();
    type Error = CodecError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CodecError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CodecError> {
        self.finish()
    }
}

impl ser::SerializeTuple for Compound<'_, Encoder<'_>> {
    type Ok = ();
    type Error = CodecError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CodecError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CodecError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Compound<'_, Encoder<'_>> {
    type Ok = ();
    type Error = CodecError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CodecError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CodecError> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Compound<'_, Encoder<'_>> {
    type Ok = ();
    type Error = CodecError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CodecError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CodecError> {
        self.finish()
    }
}

impl ser::SerializeMap for Compound<'_, Encoder<'_>> {
    type Ok = ();
    type Error = CodecError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), CodecError> {
        self.written += 1;
        k.serialize(&mut *self.enc)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CodecError> {
        v.serialize(&mut *self.enc)
    }
    fn end(self) -> Result<(), CodecError> {
        self.finish()
    }
}

impl ser::SerializeStruct for Compound<'_, Encoder<'_>> {
    type Ok = ();
    type Error = CodecError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        v: &T,
    ) -> Result<(), CodecError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CodecError> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Compound<'_, Encoder<'_>> {
    type Ok = ();
    type Error = CodecError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        v: &T,
    ) -> Result<(), CodecError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CodecError> {
        self.finish()
    }
}

struct Decoder<'de> {
    input: &'de [u8],
    /// Strings seen so far in this value, in the order the encoder remembered them.
    strings: Vec<&'de str>,
}

fn truncated() -> CodecError {
    CodecError("truncated value".into())
}

impl<'de> Decoder<'de> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.input.split_first().ok_or_else(truncated)?;
        self.input = rest;
        Ok(b)
    }

    fn peek(&self) -> Result<u8, CodecError> {
        self.input.first().copied().ok_or_else(truncated)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(CodecError("varint longer than 64 bits".into()))
    }

    fn len(&mut self) -> Result<usize, CodecError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| CodecError("length too large".into()))?;
        Ok(n)
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8], CodecError> {
        if self.input.len() < n {
            return Err(truncated());
        }
        let (a, b) = self.input.split_at(n);
        self.input = b;
        Ok(a)
    }

    /// The string after a `T_STR` tag (remembered for back-references like the encoder does).
    fn str_body(&mut self) -> Result<&'de str, CodecError> {
        let n = self.len()?;
        let bytes = self.take(n)?;
        let s = std::str::from_utf8(bytes).map_err(|e| CodecError(e.to_string()))?;
        if INTERN_LEN.contains(&n) && self.strings.len() < INTERN_MAX {
            self.strings.push(s);
        }
        Ok(s)
    }

    fn str_ref(&mut self) -> Result<&'de str, CodecError> {
        let i = self.len()?;
        self.strings
            .get(i)
            .copied()
            .ok_or_else(|| CodecError(format!("string reference {i} out of range")))
    }

    /// Reads and discards one item.
    fn skip(&mut self) -> Result<(), CodecError> {
        let tag = self.byte()?;
        match tag {
            T_UNIT | T_NONE | T_FALSE | T_TRUE => Ok(()),
            t if t >= T_SMALL => Ok(()),
            T_SOME => self.skip(),
            T_INT | T_UINT | T_STR_REF => self.varint().map(|_| ()),
            T_F64 => self.take(8).map(|_| ()),
            T_STR => self.str_body().map(|_| ()),
            T_BYTES => {
                let n = self.len()?;
                self.take(n).map(|_| ())
            }
            T_SEQ => {
                for _ in 0..self.len()? {
                    self.skip()?;
                }
                Ok(())
            }
            T_MAP => {
                for _ in 0..self.len()? {
                    self.skip()?;
                    self.skip()?;
                }
                Ok(())
            }
            T_VARIANT => {
                self.varint()?;
                self.skip()
            }
            other => Err(CodecError(format!("unknown tag {other}"))),
        }
    }
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = CodecError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        let tag = self.byte()?;
        match tag {
            T_UNIT => visitor.visit_unit(),
            T_NONE => visitor.visit_none(),
            T_SOME => visitor.visit_some(self),
            T_FALSE => visitor.visit_bool(false),
            T_TRUE => visitor.visit_bool(true),
            t if t >= T_SMALL => visitor.visit_u64(u64::from(t - T_SMALL)),
            T_INT => visitor.visit_i64(unzigzag(self.varint()?)),
            T_UINT => visitor.visit_u64(self.varint()?),
            T_F64 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(self.take(8)?);
                visitor.visit_f64(f64::from_le_bytes(b))
            }
            T_STR => visitor.visit_borrowed_str(self.str_body()?),
            T_STR_REF => visitor.visit_borrowed_str(self.str_ref()?),
            T_BYTES => {
                let n = self.len()?;
                visitor.visit_borrowed_bytes(self.take(n)?)
            }
            T_SEQ => {
                let n = self.len()?;
                let mut access = Elements { dec: self, left: n };
                let v = visitor.visit_seq(&mut access)?;
                // a struct of an older layout may carry fields this build does not read
                for _ in 0..access.left {
                    access.dec.skip()?;
                }
                Ok(v)
            }
            T_MAP => {
                let n = self.len()?;
                let mut access = Elements { dec: self, left: n };
                let v = visitor.visit_map(&mut access)?;
                for _ in 0..access.left {
                    access.dec.skip()?;
                    access.dec.skip()?;
                }
                Ok(v)
            }
            T_VARIANT => Err(CodecError(
                "an enum variant where no enum was expected".into(),
            )),
            other => Err(CodecError(format!("unknown tag {other}"))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        match self.peek()? {
            T_NONE | T_UNIT => {
                self.byte()?;
                visitor.visit_none()
            }
            T_SOME => {
                self.byte()?;
                visitor.visit_some(self)
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        match self.byte()? {
            T_VARIANT => {
                let index = self.varint()?;
                let index = u32::try_from(index)
                    .map_err(|_| CodecError("variant index too large".into()))?;
                visitor.visit_enum(Variant { dec: self, index })
            }
            other => Err(CodecError(format!(
                "expected an enum variant, found tag {other}"
            ))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, CodecError> {
        self.skip()?;
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

/// The elements of a sequence or the entries of a map.
struct Elements<'a, 'de> {
    dec: &'a mut Decoder<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for &mut Elements<'_, 'de> {
    type Error = CodecError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, CodecError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.dec).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for &mut Elements<'_, 'de> {
    type Error = CodecError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, CodecError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.dec).map(Some)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, CodecError> {
        seed.deserialize(&mut *self.dec)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// An enum variant: its index, then its content.
struct Variant<'a, 'de> {
    dec: &'a mut Decoder<'de>,
    index: u32,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a, 'de> {
    type Error = CodecError;
    type Variant = Self;
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self), CodecError> {
        let v = seed.deserialize(self.index.into_deserializer())?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = CodecError;
    fn unit_variant(self) -> Result<(), CodecError> {
        de::Deserialize::deserialize(&mut *self.dec)
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, CodecError> {
        seed.deserialize(&mut *self.dec)
    }
    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        de::Deserializer::deserialize_any(&mut *self.dec, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, CodecError> {
        de::Deserializer::deserialize_any(&mut *self.dec, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;
    use weir_expr::Value;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Empty,
        Count(u64),
        Pair(i64, Value),
        Named { a: Option<i64>, b: String },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct State {
        deadline: i64,
        shapes: Vec<Shape>,
        ratio: f64,
        flag: bool,
        tag: Option<Option<u8>>,
        bytes: Vec<u8>,
        by_name: BTreeMap<String, i32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pending: Vec<(usize, Value)>,
    }

    fn record(json: &str) -> Value {
        Value::from_json(json).unwrap()
    }

    fn sample(pending: Vec<(usize, Value)>) -> State {
        State {
            deadline: 1_700_000_000_000,
            shapes: vec![
                Shape::Empty,
                Shape::Count(0),
                Shape::Count(u64::MAX),
                Shape::Pair(
                    -1,
                    record(r#"{"ad":"a-17","n":-3,"x":2.5,"ok":true,"l":[null,"s"]}"#),
                ),
                Shape::Named {
                    a: None,
                    b: "é✓".into(),
                },
                Shape::Named {
                    a: Some(i64::MIN),
                    b: String::new(),
                },
            ],
            ratio: -0.125,
            flag: true,
            tag: Some(None),
            bytes: vec![0, 255, 7],
            by_name: [("x".to_string(), -7), ("yy".to_string(), 128)].into(),
            pending,
        }
    }

    fn round_trip<V: Serialize + DeserializeOwned>(v: &V) -> (V, usize) {
        let mut buf = Vec::new();
        encode_into(v, &mut buf).unwrap();
        assert_eq!(buf[0], MARK);
        (decode(&buf).unwrap(), buf.len())
    }

    #[test]
    fn values_round_trip_exactly() {
        for pending in [vec![], vec![(2, record(r#"{"requestId":"r1","ts":5}"#))]] {
            let s = sample(pending);
            assert_eq!(round_trip(&s).0, s);
        }
        for v in [
            Value::Null,
            Value::Int(0),
            Value::Int(127),
            Value::Int(128),
            Value::Int(-1),
            Value::Int(i64::MAX),
            Value::UInt(u64::MAX),
            Value::Float(f64::INFINITY),
            Value::str(""),
            Value::str("x"),
            record(r#"[[],{},{"":""}]"#),
        ] {
            assert_eq!(round_trip(&v).0, v);
        }
    }

    #[test]
    fn repeated_strings_are_written_once_and_the_value_is_smaller_than_json() {
        let one = record(r#"{"requestId":"r-000001","adId":"ad-42","type":"impression"}"#);
        let events: Vec<Value> = (0..10).map(|_| one.clone()).collect();
        let (back, len) = round_trip(&events);
        assert_eq!(back, events);
        let json = serde_json::to_vec(&events).unwrap().len();
        assert!(len * 3 < json, "binary {len} B, JSON {json} B");
    }

    #[test]
    fn json_written_by_earlier_builds_still_decodes() {
        let mut s = sample(vec![(1, Value::Int(3))]);
        s.tag = Some(Some(3)); // JSON cannot tell Some(None) from None
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(decode::<State>(&json).unwrap(), s);
    }

    #[test]
    fn a_struct_without_its_skipped_trailing_field_decodes_with_the_default() {
        let s = sample(vec![]);
        let mut buf = Vec::new();
        encode_into(&s, &mut buf).unwrap();
        let back: State = decode(&buf).unwrap();
        assert!(back.pending.is_empty());
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        encode_into(&sample(vec![(1, Value::str("abc"))]), &mut buf).unwrap();
        for cut in 1..buf.len() {
            assert!(decode::<State>(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = buf.clone();
        extra.push(T_UNIT);
        assert!(decode::<State>(&extra).is_err());
        assert!(decode::<State>(&[MARK, 0x7f]).is_err());
    }
}
