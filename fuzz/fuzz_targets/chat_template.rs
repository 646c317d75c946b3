//! Arbitrary conversations rendered through real chat templates with
//! `engine::template::ChatTemplate`: errors (a template's `raise_exception`, a render
//! failure) are fine, panics are not.
//!
//! The input bytes become, through `arbitrary`, a list of messages (the usual roles or any
//! string, any content, sometimes a tool call or a tool name), `add_generation_prompt`, and
//! `tools` (none, well-formed function schemas, or any JSON value). Each conversation is
//! rendered by every template below, with the special tokens its model uses.
//!
//! Run: `cargo fuzz run chat_template` (see `fuzz/README.md`).
#![no_main]

use std::sync::OnceLock;

use engine::template::{ChatMessage, ChatTemplate};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

// The Jinja sources exactly as the models publish them (`chat_template` of
// `tokenizer_config.json`, which the GGUF conversion copies to `tokenizer.chat_template`).

/// Qwen2.5 (ChatML with tools): `tokenizer_config.json` of Qwen/Qwen2.5-Coder-0.5B-Instruct, as carried by the qwen2.5-coder:0.5b test model's GGUF.
const QWEN25: &str = r##"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"##;

/// SmolLM2 (plain ChatML with a default system prompt): HuggingFaceTB/SmolLM2-135M-Instruct, as carried by the smollm2:135m test model's GGUF.
const SMOLLM2: &str = r##"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}"##;

/// Llama 3.2 (tools, `strftime_now`, system message extraction): `tokenizer_config.json` of meta-llama/Llama-3.2-3B-Instruct.
const LLAMA32: &str = r##"{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"##;

/// Gemma 3 (system folded into the first user turn, alternation enforced with `raise_exception`): `tokenizer_config.json` of google/gemma-3-*-it.
const GEMMA3: &str = r##"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"##;

/// (name, source, BOS, EOS)
const TEMPLATES: &[(&str, &str, &str, &str)] = &[
    ("qwen2.5", QWEN25, "", "<|im_end|>"),
    ("smollm2", SMOLLM2, "<|im_start|>", "<|im_end|>"),
    ("llama3.2", LLAMA32, "<|begin_of_text|>", "<|eot_id|>"),
    ("gemma3", GEMMA3, "<bos>", "<eos>"),
    ("qwen3", include_str!("../../crates/engine/tests/data/qwen3.jinja"), "", "<|im_end|>"),
];

fn templates() -> &'static [ChatTemplate] {
    static COMPILED: OnceLock<Vec<ChatTemplate>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        TEMPLATES
            .iter()
            .map(|&(name, source, bos, eos)| ChatTemplate::new(source, bos, eos).unwrap_or_else(|e| panic!("the {name} template does not compile: {e}")))
            .collect()
    })
}

#[derive(Arbitrary, Debug)]
enum Role {
    System,
    User,
    Assistant,
    Tool,
    Ipython,
    Other(String),
}

/// A JSON value of any shape (tool arguments, a malformed `tools`).
#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => json!(b),
            Json::Int(i) => json!(i),
            Json::Float(x) => json!(x),
            Json::Str(s) => json!(s),
            Json::List(v) => Value::Array(v.iter().map(Json::to_value).collect()),
            Json::Object(kv) => Value::Object(kv.iter().map(|(k, v)| (k.clone(), v.to_value())).collect()),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct ToolCall {
    name: String,
    arguments: Json,
}

#[derive(Arbitrary, Debug)]
struct Message {
    role: Role,
    content: String,
    /// On any role, as a caller may send it.
    tool_calls: Option<Vec<ToolCall>>,
    /// The tool's name / the call answered (`tool` turns).
    name: Option<String>,
    tool_call_id: Option<String>,
}

#[derive(Arbitrary, Debug)]
struct FunctionSchema {
    name: String,
    description: String,
    parameters: Vec<(String, String)>,
}

#[derive(Arbitrary, Debug)]
enum Tools {
    None,
    Functions(Vec<FunctionSchema>),
    Any(Json),
}

#[derive(Arbitrary, Debug)]
struct Input {
    messages: Vec<Message>,
    add_generation_prompt: bool,
    tools: Tools,
}

fn chat_message(m: &Message) -> ChatMessage {
    let role = match &m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
        Role::Ipython => "ipython",
        Role::Other(s) => s.as_str(),
    };
    let mut msg = ChatMessage::new(role, m.content.as_str());
    msg.tool_calls = m.tool_calls.as_ref().map(|calls| {
        Value::Array(calls.iter().map(|c| json!({"type": "function", "function": {"name": c.name, "arguments": c.arguments.to_value()}})).collect())
    });
    msg.name = m.name.clone();
    msg.tool_call_id = m.tool_call_id.clone();
    msg
}

fn tools_value(tools: &Tools) -> Option<Value> {
    match tools {
        Tools::None => None,
        Tools::Functions(fs) => Some(Value::Array(
            fs.iter()
                .map(|f| {
                    let properties: serde_json::Map<String, Value> =
                        f.parameters.iter().map(|(k, d)| (k.clone(), json!({"type": "string", "description": d}))).collect();
                    let required: Vec<&String> = f.parameters.iter().map(|(k, _)| k).collect();
                    json!({"type": "function", "function": {
                        "name": f.name,
                        "description": f.description,
                        "parameters": {"type": "object", "properties": properties, "required": required},
                    }})
                })
                .collect(),
        )),
        Tools::Any(j) => Some(j.to_value()),
    }
}

fuzz_target!(|input: Input| {
    let messages: Vec<ChatMessage> = input.messages.iter().map(chat_message).collect();
    let tools = tools_value(&input.tools);
    for template in templates() {
        let _ = template.render(&messages, input.add_generation_prompt, tools.as_ref());
    }
});
