//! Reading the script's replies: arrays of strings, integers, nils (Lua's
//! `false`) and nested arrays.

use redis::Value;
use weir_core::ids::MessageId;
use weir_core::stream::{Outcome, StreamState};
use weir_core::wire::Message;

use crate::Failure;

/// The fields of one reply array, read front to back.
pub(crate) struct Fields(std::vec::IntoIter<Value>);

fn bad(what: &str, v: &Value) -> Failure {
    Failure::Protocol(format!("expected {what}, got {v:?}"))
}

impl Fields {
    pub(crate) fn reply(v: Value) -> Result<Self, Failure> {
        match v {
            Value::Array(items) => Ok(Self(items.into_iter())),
            other => Err(bad("an array", &other)),
        }
    }

    fn next(&mut self) -> Value {
        self.0.next().unwrap_or(Value::Nil)
    }

    pub(crate) fn tag_str(&mut self) -> Result<String, Failure> {
        self.str()
    }

    pub(crate) fn tag(&mut self, want: &str) -> Result<(), Failure> {
        let got = self.str()?;
        if got == want {
            Ok(())
        } else {
            Err(Failure::Protocol(format!("expected {want}, got {got}")))
        }
    }

    pub(crate) fn opt_str(&mut self) -> Result<Option<String>, Failure> {
        match self.next() {
            Value::Nil => Ok(None),
            Value::BulkString(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|e| Failure::Protocol(e.to_string())),
            Value::SimpleString(s) => Ok(Some(s)),
            Value::Int(n) => Ok(Some(n.to_string())),
            other => Err(bad("a string", &other)),
        }
    }

    pub(crate) fn str(&mut self) -> Result<String, Failure> {
        self.opt_str()?
            .ok_or_else(|| Failure::Protocol("a string was nil".into()))
    }

    pub(crate) fn opt_u64(&mut self) -> Result<Option<u64>, Failure> {
        match self.next() {
            Value::Nil => Ok(None),
            Value::Int(n) => u64::try_from(n)
                .map(Some)
                .map_err(|_| Failure::Protocol(format!("negative number {n}"))),
            Value::BulkString(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| Failure::Protocol("a number was not one".into())),
            other => Err(bad("a number", &other)),
        }
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Failure> {
        self.opt_u64()?
            .ok_or_else(|| Failure::Protocol("a number was nil".into()))
    }

    pub(crate) fn message_id(&mut self) -> Result<MessageId, Failure> {
        MessageId::parse(self.str()?).map_err(|e| Failure::Protocol(e.to_string()))
    }

    /// `outcome`, then `reason` (nil unless failed).
    pub(crate) fn outcome(&mut self) -> Result<Outcome, Failure> {
        let outcome = self.str()?;
        let reason = self.opt_str()?;
        crate::outcome_of(&outcome, reason)
    }

    pub(crate) fn opt_array(&mut self) -> Result<Option<Fields>, Failure> {
        match self.next() {
            Value::Nil => Ok(None),
            Value::Array(items) => Ok(Some(Fields(items.into_iter()))),
            other => Err(bad("an array", &other)),
        }
    }

    fn array(&mut self) -> Result<Fields, Failure> {
        self.opt_array()?
            .ok_or_else(|| Failure::Protocol("an array was nil".into()))
    }

    pub(crate) fn strings(&mut self) -> Result<Vec<String>, Failure> {
        let mut a = self.array()?;
        let mut out = Vec::with_capacity(a.0.len());
        while a.0.len() > 0 {
            out.push(a.str()?);
        }
        Ok(out)
    }

    /// An array of messages as JSON.
    pub(crate) fn messages(&mut self) -> Result<Vec<Message>, Failure> {
        self.strings()?
            .iter()
            .map(|s| serde_json::from_str(s).map_err(|e| Failure::Protocol(e.to_string())))
            .collect()
    }

    pub(crate) fn state(&mut self) -> Result<StreamState, Failure> {
        crate::state_of(self.array()?)
    }
}
