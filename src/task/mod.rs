//! What tasks mean, apart from HTTP and from the engines: chat templates and the shaping of
//! generation requests.

pub mod chat_template;
pub mod generate;
