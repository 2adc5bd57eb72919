//! A session's values as its handle holds them: a map, or the body the store answered with
//! and the values written since, so a request that reads a key or two and writes one never
//! decodes the others.

use std::collections::BTreeMap;

use crate::body::Body;

/// Key → encoded value.
pub(crate) type Map = BTreeMap<String, Vec<u8>>;

#[derive(Debug, Clone)]
pub(crate) enum Data {
    Map(Map),
    /// Read in place; `written` holds what was put since and shadows the body. Anything but
    /// reads and puts turns it into [`Data::Map`] first ([`Data::map_mut`]).
    Body {
        body: Body,
        written: Map,
    },
}

impl Default for Data {
    fn default() -> Self {
        Self::Map(Map::new())
    }
}

impl From<Body> for Data {
    fn from(body: Body) -> Self {
        Self::Body {
            body,
            written: Map::new(),
        }
    }
}

impl Data {
    pub(crate) fn get(&self, key: &str) -> Option<&[u8]> {
        match self {
            Self::Map(map) => map.get(key).map(Vec::as_slice),
            Self::Body { body, written } => written
                .get(key)
                .map(Vec::as_slice)
                .or_else(|| body.get(key)),
        }
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Self::Map(map) => map.is_empty(),
            Self::Body { body, written } => body.is_empty() && written.is_empty(),
        }
    }

    /// How many keys have values.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Map(map) => map.len(),
            Self::Body { body, written } => {
                body.len() + written.keys().filter(|k| body.get(k).is_none()).count()
            }
        }
    }

    /// Where a put goes: the map, or the values written over the body. Only for inserting or
    /// replacing values, never for removing them.
    pub(crate) fn put_target(&mut self) -> &mut Map {
        match self {
            Self::Map(map) => map,
            Self::Body { written, .. } => written,
        }
    }

    /// The values as a map, decoding the body (once) if the handle still reads it in place.
    pub(crate) fn map_mut(&mut self) -> &mut Map {
        if let Self::Body { body, written } = self {
            let mut map = body.data();
            map.append(written);
            *self = Self::Map(map);
        }
        match self {
            Self::Map(map) => map,
            Self::Body { written, .. } => written,
        }
    }

    /// The values as a map, decoded afresh when read in place.
    pub(crate) fn to_map(&self) -> Map {
        match self {
            Self::Map(map) => map.clone(),
            Self::Body { body, written } => {
                let mut map = body.data();
                map.extend(written.iter().map(|(k, v)| (k.clone(), v.clone())));
                map
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{IdGenerator, UuidV4Generator};
    use crate::record::Record;
    use crate::time::Timestamp;

    fn body(pairs: &[(&str, &[u8])]) -> Body {
        let record = Record {
            key: UuidV4Generator.generate().storage_key(),
            data: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect(),
            created_at: Timestamp::from_unix_millis(1),
            expires_at: Timestamp::from_unix_millis(2),
            owner: None,
        };
        let mut bytes = Vec::new();
        crate::body::encode_into(&record, &mut bytes);
        Body::new(bytes).unwrap()
    }

    /// Read in place, the values written shadow the body's, and every view (get, len, the
    /// map decoded afresh or for good) is the one a map holding both would give.
    #[test]
    fn a_body_with_writes_reads_as_the_merged_map() {
        let mut data = Data::from(body(&[("a", b"1"), ("c", b"3"), ("e", b"5")]));
        assert!(matches!(data, Data::Body { .. }));
        data.put_target().insert("c".into(), b"33".to_vec());
        data.put_target().insert("d".into(), b"4".to_vec());
        let want: Map = [("a", &b"1"[..]), ("c", b"33"), ("d", b"4"), ("e", b"5")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect();
        for key in ["", "a", "b", "c", "d", "e", "f"] {
            assert_eq!(data.get(key), want.get(key).map(Vec::as_slice), "{key}");
            assert_eq!(data.contains_key(key), want.contains_key(key));
        }
        assert_eq!((data.len(), data.is_empty()), (4, false));
        assert_eq!(data.to_map(), want);
        assert!(matches!(data, Data::Body { .. }), "to_map decodes a copy");
        assert_eq!(*data.map_mut(), want);
        assert!(matches!(data, Data::Map(_)));
        assert!(Data::from(body(&[])).is_empty());
    }
}
