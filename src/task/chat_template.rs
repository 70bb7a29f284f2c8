//! Chat templates: the Jinja template stored in a GGUF file (or given with `--chat-template`)
//! rendered with minijinja the way Hugging Face renders it: trimmed blocks, Python string
//! methods, `raise_exception`, and the model's BOS/EOS texts.

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;

/// One message as the template sees it (text content only).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TemplateMessage {
    pub role: String,
    pub content: String,
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is returned with minijinja's description.
    pub fn new(source: String, bos: String, eos: String) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |format: String| -> String {
            strftime_now(&format)
        });
        env.add_template_owned("chat", source)
            .map_err(|e| format!("invalid chat template: {e}"))?;
        Ok(Self { env, bos, eos })
    }

    /// The prompt for `messages`, ending with the assistant's turn opened when
    /// `add_generation_prompt` is set. A template's own refusal (`raise_exception`, e.g. roles
    /// that do not alternate) comes back as the error text.
    pub fn render(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let template = self.env.get_template("chat").map_err(|e| e.to_string())?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos,
                eos_token => self.eos,
            })
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidOperation => e
                    .detail()
                    .unwrap_or("the chat template refused the messages")
                    .to_string(),
                _ => format!("the chat template failed: {e}"),
            })
    }
}

/// Today's date in the few strftime forms templates use (`%d %b %Y`, `%Y-%m-%d`).
fn strftime_now(format: &str) -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format
        .replace("%Y", &year.to_string())
        .replace("%m", &format!("{month:02}"))
        .replace("%d", &format!("{day:02}"))
        .replace("%b", MONTHS[(month - 1) as usize])
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: &str) -> TemplateMessage {
        TemplateMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn python_string_methods_and_trimmed_blocks() {
        let source = "{% for m in messages %}\n{{ m['role'].upper() }}: {{ m['content'].strip() }}\n{% endfor %}{% if add_generation_prompt %}{{ bos_token }}{% endif %}";
        let t = ChatTemplate::new(source.into(), "<s>".into(), "</s>".into()).unwrap();
        let out = t.render(&[message("user", "  hi  ")], true).unwrap();
        assert_eq!(out, "USER: hi\n<s>");
    }

    #[test]
    fn raise_exception_is_the_error_text() {
        let source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}";
        let t = ChatTemplate::new(source.into(), String::new(), String::new()).unwrap();
        assert_eq!(
            t.render(&[message("assistant", "x")], true).unwrap_err(),
            "first must be user"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
    }
}
