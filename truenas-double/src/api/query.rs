//! Query filters and options (`[["name","=","tank"]], {"get": true}`) as `*.query` methods
//! take them.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::error::{CallFailure, CallResult};
use super::params::Checker;

/// Filters, orders, pages and selects `items` as the middleware's `filter_list` does.
pub fn apply(
    mut items: Vec<Value>,
    filters: Option<&Value>,
    options: Option<&Value>,
) -> CallResult {
    let options = parse_options(options)?;
    if let Some(filters) = filters.filter(|f| !f.is_null()) {
        let list = filters
            .as_array()
            .ok_or_else(|| CallFailure::invalid("filters", "Input should be a valid list"))?;
        for filter in list {
            validate_filter(filter)?;
        }
        items.retain(|item| list.iter().all(|f| matches(item, f)));
    }
    for key in options.order_by.iter().rev() {
        let (field, descending) = key
            .strip_prefix('-')
            .map_or((key.as_str(), false), |f| (f, true));
        items.sort_by(|a, b| {
            let ordering = compare(lookup(a, field), lookup(b, field)).unwrap_or(Ordering::Equal);
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        });
    }
    let mut items: Vec<Value> = items.into_iter().skip(options.offset).collect();
    if let Some(limit) = options.limit.filter(|l| *l > 0) {
        items.truncate(limit);
    }
    if let Some(select) = &options.select {
        items = items
            .into_iter()
            .map(|item| project(&item, select))
            .collect();
    }
    if options.count {
        return Ok(Value::from(items.len()));
    }
    if options.get {
        return items
            .into_iter()
            .next()
            .ok_or_else(CallFailure::match_not_found);
    }
    Ok(Value::Array(items))
}

#[derive(Default)]
struct Options {
    get: bool,
    count: bool,
    limit: Option<usize>,
    offset: usize,
    order_by: Vec<String>,
    select: Option<Vec<String>>,
}

const OPTION_KEYS: [&str; 9] = [
    "get",
    "count",
    "limit",
    "offset",
    "order_by",
    "select",
    "extra",
    "relationships",
    "force_sql_filters",
];

fn parse_options(options: Option<&Value>) -> Result<Options, CallFailure> {
    let Some(value) = options.filter(|o| !o.is_null()) else {
        return Ok(Options::default());
    };
    let object = value
        .as_object()
        .ok_or_else(|| CallFailure::invalid("options", "Input should be a valid dictionary"))?;
    let mut checker = Checker::default();
    checker.no_extra(object, &OPTION_KEYS, "options");
    let mut parsed = Options::default();
    parse_option_values(object, &mut checker, &mut parsed);
    checker.finish()?;
    Ok(parsed)
}

fn parse_option_values(object: &Map<String, Value>, checker: &mut Checker, parsed: &mut Options) {
    if let Some(v) = object.get("get") {
        parsed.get = checker.boolean(v, "options.get").unwrap_or(false);
    }
    if let Some(v) = object.get("count") {
        parsed.count = checker.boolean(v, "options.count").unwrap_or(false);
    }
    if let Some(v) = object.get("limit") {
        parsed.limit = checker
            .integer(v, "options.limit")
            .map(|n| n.max(0) as usize);
    }
    if let Some(v) = object.get("offset") {
        parsed.offset = checker
            .integer(v, "options.offset")
            .map_or(0, |n| n.max(0) as usize);
    }
    if let Some(v) = object.get("order_by") {
        parsed.order_by = string_list(checker, v, "options.order_by");
    }
    if let Some(v) = object.get("select") {
        parsed.select = Some(string_list(checker, v, "options.select"));
    }
}

fn string_list(checker: &mut Checker, value: &Value, loc: &str) -> Vec<String> {
    let Some(list) = value.as_array() else {
        checker.fail(loc, "Input should be a valid list");
        return Vec::new();
    };
    list.iter()
        .enumerate()
        .filter_map(|(i, v)| checker.string(v, &format!("{loc}.{i}")).map(str::to_string))
        .collect()
}

const OPERATORS: [&str; 14] = [
    "=", "!=", ">", ">=", "<", "<=", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$",
];

fn validate_filter(filter: &Value) -> Result<(), CallFailure> {
    let invalid = |message: String| CallFailure::invalid("filters", message);
    let Some(parts) = filter.as_array() else {
        return Err(invalid(format!("Invalid filter {filter}")));
    };
    match parts.as_slice() {
        [op, branches] if op == "OR" => {
            let branches = branches
                .as_array()
                .ok_or_else(|| invalid("OR requires a list of filters".into()))?;
            for branch in branches {
                match branch.as_array() {
                    Some(inner) if inner.first().is_some_and(Value::is_array) => {
                        inner.iter().try_for_each(validate_filter)?
                    }
                    _ => validate_filter(branch)?,
                }
            }
            Ok(())
        }
        [field, op, _] if field.is_string() => match op.as_str() {
            Some(op) if OPERATORS.contains(&op) => Ok(()),
            _ => Err(invalid(format!("Invalid operation: {op}"))),
        },
        _ => Err(invalid(format!("Invalid filter {filter}"))),
    }
}

fn matches(item: &Value, filter: &Value) -> bool {
    let Some(parts) = filter.as_array() else {
        return false;
    };
    match parts.as_slice() {
        [op, branches] if op == "OR" => branches.as_array().is_some_and(|bs| {
            bs.iter().any(|b| match b.as_array() {
                Some(inner) if inner.first().is_some_and(Value::is_array) => {
                    inner.iter().all(|f| matches(item, f))
                }
                _ => matches(item, b),
            })
        }),
        [Value::String(field), Value::String(op), expected] => {
            test(lookup(item, field), op, expected)
        }
        _ => false,
    }
}

fn test(actual: Option<&Value>, op: &str, expected: &Value) -> bool {
    let actual = actual.unwrap_or(&Value::Null);
    let text = |v: &Value| v.as_str().map(str::to_string);
    match op {
        "=" => actual == expected,
        "!=" => actual != expected,
        ">" => compare(Some(actual), Some(expected)) == Some(Ordering::Greater),
        ">=" => matches!(
            compare(Some(actual), Some(expected)),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        "<" => compare(Some(actual), Some(expected)) == Some(Ordering::Less),
        "<=" => matches!(
            compare(Some(actual), Some(expected)),
            Some(Ordering::Less | Ordering::Equal)
        ),
        "in" => expected
            .as_array()
            .is_some_and(|list| list.contains(actual)),
        "nin" => expected
            .as_array()
            .is_some_and(|list| !list.contains(actual)),
        "rin" => actual
            .as_array()
            .is_some_and(|list| list.contains(expected)),
        "rnin" => actual
            .as_array()
            .is_some_and(|list| !list.contains(expected)),
        "^" => text(actual)
            .zip(text(expected))
            .is_some_and(|(a, e)| a.starts_with(&e)),
        "!^" => text(actual)
            .zip(text(expected))
            .is_some_and(|(a, e)| !a.starts_with(&e)),
        "$" => text(actual)
            .zip(text(expected))
            .is_some_and(|(a, e)| a.ends_with(&e)),
        "!$" => text(actual)
            .zip(text(expected))
            .is_some_and(|(a, e)| !a.ends_with(&e)),
        _ => false,
    }
}

/// A dotted path (`autotrim.value`) into an object.
fn lookup<'v>(item: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(item, |value, key| value.get(key))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Option<Ordering> {
    match (a?, b?) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Null, _) => Some(Ordering::Less),
        (_, Value::Null) => Some(Ordering::Greater),
        (Value::Object(x), Value::Object(y)) => compare(x.get("$date"), y.get("$date")),
        _ => None,
    }
}

fn project(item: &Value, select: &[String]) -> Value {
    let mut out = Map::new();
    for field in select {
        if let Some(value) = item.get(field) {
            out.insert(field.clone(), value.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pools() -> Vec<Value> {
        vec![
            json!({"id": 1, "name": "tank", "healthy": true, "size": 10}),
            json!({"id": 2, "name": "backup", "healthy": false, "size": 30}),
            json!({"id": 3, "name": "tape", "healthy": true, "size": 20}),
        ]
    }

    #[test]
    fn filters_and_get() {
        let one = apply(
            pools(),
            Some(&json!([["name", "=", "tank"]])),
            Some(&json!({"get": true})),
        );
        assert_eq!(one.expect("found")["id"], 1);
        let many = apply(
            pools(),
            Some(&json!([["healthy", "=", true], ["size", ">", 15]])),
            None,
        );
        assert_eq!(many.expect("found"), json!([pools()[2]]));
        let starts = apply(
            pools(),
            Some(&json!([["name", "^", "ta"]])),
            Some(&json!({"count": true})),
        );
        assert_eq!(starts.expect("counted"), json!(2));
    }

    #[test]
    fn get_without_match_is_match_not_found() {
        let missing = apply(
            pools(),
            Some(&json!([["name", "=", "nope"]])),
            Some(&json!({"get": true})),
        );
        assert_eq!(missing.expect_err("absent"), CallFailure::match_not_found());
    }

    #[test]
    fn order_limit_select_and_or() {
        let sorted = apply(
            pools(),
            None,
            Some(&json!({"order_by": ["-size"], "limit": 2, "select": ["name"]})),
        );
        assert_eq!(
            sorted.expect("sorted"),
            json!([{"name": "backup"}, {"name": "tape"}])
        );
        let either = apply(
            pools(),
            Some(&json!([["OR", [["id", "=", 1], ["id", "=", 2]]]])),
            None,
        );
        assert_eq!(either.expect("or").as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn bad_filters_are_validation_errors() {
        assert!(matches!(
            apply(pools(), Some(&json!([["name", "~~", "x"]])), None),
            Err(CallFailure::Validation(_))
        ));
        assert!(matches!(
            apply(pools(), None, Some(&json!({"gett": true}))),
            Err(CallFailure::Validation(_))
        ));
    }
}
