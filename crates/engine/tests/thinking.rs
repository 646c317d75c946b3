//! Thinking models: the streaming splitter against the whole-text split, and chat
//! templates rendered with thinking controls (Qwen3, DeepSeek-R1-Distill).

use engine::template::{ChatMessage, ChatTemplate, RenderOptions, Think, ThinkLevel};
use engine::thinking::{split_thinking, starts_in_thinking, template_supports_thinking, template_thinking_levels, Split, ThinkingSplitter};

/// Streams `pieces` through a splitter: (thinking, content), concatenated.
fn stream<'a>(pieces: impl IntoIterator<Item = &'a str>, starts_in_thinking: bool) -> (String, String) {
    let mut splitter = ThinkingSplitter::new(starts_in_thinking);
    let (mut thinking, mut content) = (String::new(), String::new());
    let mut take = |s: Split| {
        // Thinking never follows content.
        assert!(content.is_empty() || s.thinking.is_empty());
        thinking += &s.thinking;
        content += &s.content;
    };
    for piece in pieces {
        take(splitter.push(piece));
    }
    take(splitter.finish());
    (thinking, content)
}

/// The whole-text split as plain strings (no thinking: "").
fn whole(text: &str, starts_in_thinking: bool) -> (String, String) {
    let (thinking, content) = split_thinking(text, starts_in_thinking);
    (thinking.unwrap_or_default(), content)
}

/// Every char-boundary position of `text`.
fn boundaries(text: &str) -> Vec<usize> {
    (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect()
}

/// Asserts that `text` splits into `want` whole, streamed in one piece, char by char, and
/// cut at every pair of positions (so every tag is cut at every byte where it can be).
fn check(text: &str, starts: bool, want: (&str, &str)) {
    let want = (want.0.to_string(), want.1.to_string());
    assert_eq!(whole(text, starts), want, "whole split of {text:?}");
    assert_eq!(stream([text], starts), want, "one piece: {text:?}");
    let chars: Vec<String> = text.chars().map(String::from).collect();
    assert_eq!(stream(chars.iter().map(String::as_str), starts), want, "char by char: {text:?}");
    let cuts = boundaries(text);
    for &i in &cuts {
        assert_eq!(stream([&text[..i], &text[i..]], starts), want, "cut at {i}: {text:?}");
        for &j in cuts.iter().filter(|&&j| j >= i) {
            let pieces = [&text[..i], &text[i..j], &text[j..]];
            assert_eq!(stream(pieces, starts), want, "cut at {i} and {j}: {text:?}");
        }
    }
}

#[test]
fn qwen3_style_output_at_every_split_point() {
    check("<think>\nThe user says hi. I greet back.\n</think>\n\nHello! How can I help?", false, ("The user says hi. I greet back.", "Hello! How can I help?"));
    // Whitespace before the opening tag; multi-byte text on both sides of the tags.
    check("\n <think>Zürich — 東京?\n\n</think>\n\nAnswer: ｜é｜", false, ("Zürich — 東京?", "Answer: ｜é｜"));
    // Text that looks like the start of a tag inside the thinking.
    check("<think>a < b and </thin is not </ the end</think>x", false, ("a < b and </thin is not </ the end", "x"));
}

#[test]
fn r1_output_starts_inside_the_block() {
    // The prompt ended with `<｜Assistant｜><think>\n`: only `</think>` appears in the output.
    check("Okay, 2+2 is 4.\n</think>\n\nThe answer is **4**.", true, ("Okay, 2+2 is 4.", "The answer is **4**."));
    // A redundant `<think>` at the start (some R1 builds repeat it) is dropped.
    check("<think>\nOkay.\n</think>\n\n4", true, ("Okay.", "4"));
    // ... but only there.
    check("Okay, <think> is a tag.</think>4", true, ("Okay, <think> is a tag.", "4"));
}

#[test]
fn a_later_think_tag_is_content() {
    check("Use <think> tags like <think>this</think>.", false, ("", "Use <think> tags like <think>this</think>."));
    check("<think>t</think>Then <think>more</think> text", false, ("t", "Then <think>more</think> text"));
}

#[test]
fn output_without_thinking_is_all_content() {
    check("Hello there.\n\nBye.", false, ("", "Hello there.\n\nBye."));
    // Leading whitespace of an answer without a block is kept.
    check("\n  Hi", false, ("", "\n  Hi"));
    // A `</think>` without an opened block is content too.
    check("a</think>b", false, ("", "a</think>b"));
    assert_eq!(split_thinking("Hello", false), (None, "Hello".to_string()));
}

#[test]
fn an_unclosed_block_is_all_thinking() {
    check("<think>\nStill thinking when the tokens ran out.\n", false, ("Still thinking when the tokens ran out.", ""));
    check("<think>cut in </thi", false, ("cut in </thi", ""));
    check("cut off by the length limit", true, ("cut off by the length limit", ""));
    assert_eq!(split_thinking("<think>\nhm", false), (Some("hm".to_string()), String::new()));
}

#[test]
fn an_empty_block_gives_no_thinking() {
    check("<think>\n\n</think>\n\nDirect answer.", false, ("", "Direct answer."));
    assert_eq!(split_thinking("<think>\n\n</think>\n\nDirect answer.", false), (None, "Direct answer.".to_string()));
}

#[test]
fn streaming_holds_back_only_what_is_ambiguous() {
    let mut s = ThinkingSplitter::new(false);
    assert_eq!(s.push("<th"), Split::default());
    assert!(!s.is_thinking());
    assert_eq!(s.push("ink>\n"), Split::default());
    assert!(s.is_thinking());
    assert_eq!(s.push("Let me see"), Split { thinking: "Let me see".into(), content: String::new() });
    // Whitespace may end the thinking, and `</` may start the closing tag: both wait.
    assert_eq!(s.push(".\n</"), Split { thinking: ".".into(), content: String::new() });
    assert_eq!(s.push("think>\n"), Split::default());
    assert!(!s.is_thinking());
    assert_eq!(s.push("\nHi"), Split { thinking: String::new(), content: "Hi".into() });
    assert_eq!(s.push(" <think>"), Split { thinking: String::new(), content: " <think>".into() });
    assert_eq!(s.finish(), Split::default());
}

// ---- chat templates ------------------------------------------------------------------

/// `chat_template` of Qwen/Qwen3-0.6B (tokenizer_config.json), as published.
const QWEN3: &str = include_str!("data/qwen3.jinja");

/// `chat_template` of deepseek-ai/DeepSeek-R1-Distill-Qwen-32B (the same for the other
/// Qwen distills), as llama.cpp keeps it in models/templates (whitespace-controlled lines;
/// renders the same text as the single-line original).
const R1_DISTILL: &str = r##"{% if not add_generation_prompt is defined -%}
  {%- set add_generation_prompt = false -%}
{%- endif -%}
{%- set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') -%}
{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}
    {%- set ns.system_prompt = message['content'] -%}
  {%- endif -%}
{%- endfor -%}{{bos_token}}{{ns.system_prompt}}
{%- for message in messages -%}
  {%- if message['role'] == 'user' -%}
    {%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}
  {%- endif -%}
  {%- if message['role'] == 'assistant' and message['tool_calls'] -%}
    {%- set ns.is_tool = false -%}
    {%- for tool in message['tool_calls']-%}
      {%- if not ns.is_first -%}
        {{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}
        {%- set ns.is_first = true -%}
      {%- else -%}
        {{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}
      {%- endif -%}
    {%- endfor -%}
    {{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}
  {%- endif -%}
  {%- if message['role'] == 'assistant' and message['content'] is not none -%}
    {%- if ns.is_tool -%}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}
      {%- set ns.is_tool = false -%}
    {%- else -%}
      {%- set content = message['content'] -%}
      {%- if '</think>' in content -%}
        {%- set content = content.split('</think>')[-1] -%}
      {%- endif -%}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}
    {%- endif -%}
  {%- endif -%}
  {%- if message['role'] == 'tool' -%}
    {%- set ns.is_tool = true -%}
    {%- if ns.is_output_first -%}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}
      {%- set ns.is_output_first = false -%}
      {%- else -%}{{'\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}
    {%- endif -%}
  {%- endif -%}
{%- endfor -%}
{%- if ns.is_tool -%}{{'<｜tool▁outputs▁end｜>'}}
{%- endif -%}
{%- if add_generation_prompt and not ns.is_tool -%}{{'<｜Assistant｜><think>\n'}}
{%- endif %}"##;

/// Plain ChatML (as SmolLM2 and Qwen2.5 write it, without their default system prompts).
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Meta-Llama-3-8B-Instruct's template.
const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// The part of gpt-oss's template that reads the reasoning effort.
const GPT_OSS_EFFORT: &str = "{%- if not reasoning_effort is defined %}{%- set reasoning_effort = \"medium\" %}{%- endif %}\
<|start|>system<|message|>Reasoning: {{ reasoning_effort }}<|end|>{% for m in messages %}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{% endfor %}\
{%- if add_generation_prompt %}<|start|>assistant{% endif %}";

fn qwen3() -> ChatTemplate {
    ChatTemplate::new(QWEN3, "", "<|im_end|>").unwrap()
}

fn r1() -> ChatTemplate {
    ChatTemplate::new(R1_DISTILL, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>").unwrap()
}

fn think(think: Think) -> RenderOptions {
    RenderOptions { think: Some(think) }
}

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", text)]
}

#[test]
fn qwen3_think_off_closes_an_empty_block_in_the_prompt() {
    let t = qwen3();
    let off = t.render_with(&user("Hi"), true, None, &think(Think::Off)).unwrap();
    assert_eq!(off, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
    assert!(off.ends_with("<think>\n\n</think>\n\n"));
    assert!(!starts_in_thinking(&off));
}

#[test]
fn qwen3_think_on_and_default_leave_the_prompt_open() {
    let t = qwen3();
    let want = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    for options in [think(Think::On), think(Think::Level(ThinkLevel::High)), RenderOptions::default()] {
        let prompt = t.render_with(&user("Hi"), true, None, &options).unwrap();
        assert_eq!(prompt, want, "{options:?}");
        assert!(!prompt.contains("<think>"));
        assert!(!starts_in_thinking(&prompt));
    }
    assert_eq!(t.render(&user("Hi"), true, None).unwrap(), want);
}

#[test]
fn qwen3_writes_back_the_thinking_of_the_last_turn() {
    let t = qwen3();
    let want = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nThey greet me.\n</think>\n\nHello!<|im_end|>\n";
    // Thinking in its own field (passed as `reasoning_content`) ...
    let mut answer = ChatMessage::new("assistant", "Hello!");
    answer.thinking = Some("They greet me.".into());
    let messages = vec![ChatMessage::new("user", "Hi"), answer];
    assert_eq!(t.render(&messages, false, None).unwrap(), want);
    // ... renders as it does inside the content.
    let inline = vec![ChatMessage::new("user", "Hi"), ChatMessage::new("assistant", "<think>\nThey greet me.\n</think>\n\nHello!")];
    assert_eq!(t.render(&inline, false, None).unwrap(), want);
    // Turns before the last user query lose their thinking.
    let mut earlier = messages.clone();
    earlier.push(ChatMessage::new("user", "Bye"));
    assert_eq!(
        t.render(&earlier, true, None).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn r1_distill_prompt_opens_the_block() {
    let t = r1();
    let messages = vec![ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "2+2?")];
    let prompt = t.render(&messages, true, None).unwrap();
    assert_eq!(prompt, "<｜begin▁of▁sentence｜>Be brief.<｜User｜>2+2?<｜Assistant｜><think>\n");
    assert!(starts_in_thinking(&prompt));
    // The template ignores enable_thinking: Think::Off leaves the prompt as it is (the
    // caller drops the thinking the splitter separates).
    assert_eq!(t.render_with(&messages, true, None, &think(Think::Off)).unwrap(), prompt);
    // History: the template drops the thinking of earlier answers.
    let history = vec![ChatMessage::new("user", "2+2?"), ChatMessage::new("assistant", "<think>\nEasy.\n</think>\n\n4"), ChatMessage::new("user", "3+3?")];
    assert_eq!(
        t.render(&history, true, None).unwrap(),
        "<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜>\n\n4<｜end▁of▁sentence｜><｜User｜>3+3?<｜Assistant｜><think>\n"
    );
    // What the model writes after that prompt.
    assert_eq!(split_thinking("Easy: 6.\n</think>\n\n6", starts_in_thinking(&prompt)), (Some("Easy: 6.".into()), "6".into()));
}

#[test]
fn starts_in_thinking_needs_an_open_block_at_the_end() {
    assert!(starts_in_thinking("<｜Assistant｜><think>\n"));
    assert!(starts_in_thinking("<|im_start|>assistant\n<think>"));
    assert!(!starts_in_thinking("<|im_start|>assistant\n"));
    assert!(!starts_in_thinking("<think>\n\n</think>\n\n"));
    // A user who quotes the tag does not open a block.
    assert!(!starts_in_thinking("<|im_start|>user\nWhat does <think> do?<|im_end|>\n<|im_start|>assistant\n"));
}

#[test]
fn templates_that_think() {
    assert!(template_supports_thinking(QWEN3));
    assert!(template_supports_thinking(R1_DISTILL));
    assert!(template_supports_thinking(GPT_OSS_EFFORT));
    assert!(qwen3().supports_thinking());
    assert!(!template_supports_thinking(CHATML));
    assert!(!template_supports_thinking(LLAMA3));
    assert!(!ChatTemplate::new(LLAMA3, "<|begin_of_text|>", "<|eot_id|>").unwrap().supports_thinking());

    assert!(template_thinking_levels(GPT_OSS_EFFORT));
    assert!(!template_thinking_levels(QWEN3));
    assert!(!template_thinking_levels(R1_DISTILL));
    assert!(!template_thinking_levels(CHATML));
}

#[test]
fn reasoning_effort_levels() {
    let t = ChatTemplate::new(GPT_OSS_EFFORT, "", "").unwrap();
    assert!(t.thinking_levels());
    let render = |options: RenderOptions| t.render_with(&user("Hi"), true, None, &options).unwrap();
    let expect = |effort: &str| format!("<|start|>system<|message|>Reasoning: {effort}<|end|><|start|>user<|message|>Hi<|end|><|start|>assistant");
    assert_eq!(render(RenderOptions::default()), expect("medium"));
    assert_eq!(render(think(Think::On)), expect("medium"));
    assert_eq!(render(think(Think::Level(ThinkLevel::Low))), expect("low"));
    assert_eq!(render(think(Think::Level(ThinkLevel::High))), expect("high"));
    assert_eq!(ThinkLevel::parse(" HIGH "), Some(ThinkLevel::High));
    assert_eq!(ThinkLevel::parse("max"), None);
}

#[test]
fn thinking_variables_reach_the_template() {
    let source = "{{ enable_thinking is defined }}|{{ enable_thinking }}|{{ thinking }}|{{ reasoning_effort is defined }}|{{ reasoning_effort }}";
    let t = ChatTemplate::new(source, "", "").unwrap();
    let render = |options: RenderOptions| t.render_with(&[], false, None, &options).unwrap();
    assert_eq!(render(RenderOptions::default()), "False|||False|");
    assert_eq!(render(think(Think::On)), "True|True|True|False|");
    assert_eq!(render(think(Think::Off)), "True|False|False|False|");
    assert_eq!(render(think(Think::Level(ThinkLevel::Medium))), "True|True|True|True|medium");
}

#[test]
fn message_thinking_serializes_only_when_present() {
    let mut m = ChatMessage::new("assistant", "4");
    assert_eq!(serde_json::to_value(&m).unwrap(), serde_json::json!({"role": "assistant", "content": "4"}));
    m.thinking = Some("easy".into());
    assert_eq!(serde_json::to_value(&m).unwrap(), serde_json::json!({"role": "assistant", "content": "4", "thinking": "easy"}));
    let source = "{% for m in messages %}{{ m.thinking }}/{{ m.reasoning_content }}/{{ m.content }}{% endfor %}";
    let t = ChatTemplate::new(source, "", "").unwrap();
    assert_eq!(t.render(&[m, ChatMessage::new("user", "x")], false, None).unwrap(), "easy/easy/4//x");
}
