//! JSON output with Perl's hash order: keys of every object come out in random order
//! (`to_json` without `canonical`, ref §7). Values are built as `serde_json::Value`.

use serde_json::Value;

/// Serialises `v`, shuffling the keys of every object with `rng`.
pub fn to_string(v: &Value, rng: &mut fastrand::Rng) -> String {
    let mut out = String::new();
    write(v, rng, &mut out);
    out
}

fn write(v: &Value, rng: &mut fastrand::Rng, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            rng.shuffle(&mut keys);
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push(':');
                write(&map[k.as_str()], rng, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, rng, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_different_orders() {
        let v = serde_json::json!({"a":1,"b":"x","c":[{"d":null,"e":true}],"f":2,"g":3});
        let mut rng = fastrand::Rng::with_seed(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let s = to_string(&v, &mut rng);
            assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
            seen.insert(s);
        }
        assert!(seen.len() > 1, "key order never changed");
    }
}
