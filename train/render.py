"""render.py - the prompt text `tandem serve` renders for a chat request, in plain Python.

Training must see exactly what the server will feed the model, so this module transliterates
the server's path for the built-in DeepSeek templates (standard library only):

  - server/gen_request.c api_render_chat: role `developer` is `system`; with `tools` (and
    `tool_choice` not "none") the tool list joins the first message when that is a system
    message (its text + "\\n\\n" + list, or the list alone when the text is empty), else it is
    a system message put in front;
  - engine/text/toolparse.c toolparse_tools_prompt: the tool list in DeepSeek-V3's call syntax,
    each function's parameters as compact JSON (jansson JSON_COMPACT, keys in request order);
  - engine/text/template.c render_v3: DeepSeek-V3 and DeepSeek-R1 (`model.template=deepseek-r1`)
    statement by statement, quirks included (only the conversation's first tool call opens
    "<｜Assistant｜><｜tool▁calls▁begin｜>"; later ones close the block after each call; tool
    outputs end with "<｜tool▁outputs▁end｜>" and no generation prompt follows them; R1 keeps only
    what follows the last "</think>" of a past answer and opens "<think>\\n" for the answer).

`completion()` is the text the model is trained to generate after such a prompt (before EOS):
the answer, a tool-call block exactly as the forced-call grammar writes it
(jsonschema_compile_tool_call) and toolparse reads it, or R1 reasoning, "\\n</think>\\n\\n" and
the answer. train/check_render.py proves the prompts equal the server's token for token.
"""
import json

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>"
OUTPUTS_BEGIN, OUTPUTS_END = "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>"
OUTPUT_BEGIN, OUTPUT_END = "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>"
SEP = "<｜tool▁sep｜>"
THINK, END_THINK = "<think>", "</think>"
# ids 0-16 of the trained tokenizer, in this order (train.py)
SPECIALS = [BOS, EOS, PAD, USER, ASSISTANT, "<|EOT|>", CALLS_BEGIN, CALLS_END, CALL_BEGIN,
            CALL_END, OUTPUTS_BEGIN, OUTPUTS_END, OUTPUT_BEGIN, OUTPUT_END, SEP, THINK, END_THINK]

V3, R1 = "deepseek-v3", "deepseek-r1"


def compact(v):
    """JSON as jansson's JSON_COMPACT and JSON.stringify write it (no whitespace, UTF-8 kept)."""
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def tool_choice_kind(tools, tool_choice):
    """("none" | "auto" | "required" | "named", name) as toolparse_req_parse decides it."""
    if not tools:
        return "none", None
    if tool_choice is None or tool_choice == "auto":
        return "auto", None
    if tool_choice in ("none", "required"):
        return tool_choice, None
    return "named", tool_choice["function"]["name"]


def tools_prompt(tools, tool_choice=None, parallel=True):
    """toolparse_tools_prompt for the DeepSeek-V3 call syntax."""
    kind, named = tool_choice_kind(tools, tool_choice)
    if kind == "none":
        return ""
    out = "## Tools\n\nYou can call the following functions.\n"
    for t in tools:
        fn = t["function"]
        if kind == "named" and fn["name"] != named:
            continue
        out += "\n### " + fn["name"]
        if isinstance(fn.get("description"), str):
            out += "\nDescription: " + fn["description"]
        params = fn.get("parameters")
        out += "\nParameters: " + (compact(params) if isinstance(params, dict)
                                   else '{"type":"object","properties":{}}') + "\n"
    out += ("\nTo call a function, reply with exactly this, the arguments being a JSON object that "
            "matches its parameters:\n" + CALLS_BEGIN + CALL_BEGIN + "function" + SEP
            + 'FUNCTION_NAME\n```json\n{"argument": "value"}\n```' + CALL_END + CALLS_END + "\n")
    if parallel:
        out += ("Several calls go one after another inside the same " + CALLS_BEGIN + "..."
                + CALLS_END + ', separated by "\\n".\n')
    if kind == "auto":
        out += "Call a function only when it helps to answer; otherwise answer directly.\n"
    elif kind == "required":
        out += "You must call at least one of these functions now.\n"
    elif kind == "named":
        out += "You must call the function " + named + " now.\n"
    return out


def _call_text(call, prefix, suffix):
    fn = call["function"]
    args = fn["arguments"]
    if not isinstance(args, str):      # toolparse_history_calls: an object is dumped compact
        args = compact(args)
    return (prefix + (call.get("type") or "function") + SEP + fn["name"] + "\n```json\n" + args
            + "\n```" + CALL_END + suffix)


def _after_think(s):
    i = s.rfind(END_THINK)
    return s if i < 0 else s[i + len(END_THINK):]


def render_prompt(messages, tools=None, tool_choice=None, parallel=True, template=V3,
                  add_generation_prompt=True):
    """The prompt text of a chat request (BOS included), as tandem serve renders it."""
    msgs = [dict(m, role="system" if m["role"] == "developer" else m["role"]) for m in messages]
    tt = tools_prompt(tools, tool_choice, parallel)
    if tt:
        if msgs and msgs[0]["role"] == "system":
            own = msgs[0].get("content") or ""
            msgs[0]["content"] = own + ("\n\n" if own else "") + tt
        else:
            msgs.insert(0, {"role": "system", "content": tt})
    r1 = template == R1
    if template not in (V3, R1):
        raise ValueError(f"template {template!r}: only {V3} and {R1} are rendered here")
    out = BOS + "\n\n".join(m["content"] for m in msgs if m["role"] == "system")
    is_first, is_tool, output_first = False, False, True
    for m in msgs:
        role, content = m["role"], m.get("content")
        if role == "user":
            is_tool = False
            out += USER + content
        if role == "assistant" and content is None:
            is_tool = False
            for c in m.get("tool_calls") or []:
                if not is_first:
                    out += _call_text(c, ASSISTANT + CALLS_BEGIN + CALL_BEGIN, "")
                    is_first = True
                else:
                    out += _call_text(c, "\n" + CALL_BEGIN, CALLS_END + EOS)
        if role == "assistant" and content is not None:
            if is_tool:
                out += OUTPUTS_END + content + EOS
                is_tool = False
            else:
                out += ASSISTANT + (_after_think(content) if r1 else content) + EOS
        if role == "tool":
            is_tool = True
            out += (OUTPUTS_BEGIN + OUTPUT_BEGIN if output_first else "\n" + OUTPUT_BEGIN)
            out += content + OUTPUT_END
            output_first = False
    if is_tool:
        out += OUTPUTS_END
    if add_generation_prompt and not is_tool:
        out += ASSISTANT + (THINK + "\n" if r1 else "")
    return out


def call_block(calls):
    """A tool-call block as generated: [(name, arguments dict)] -> text (EOS not included)."""
    return (CALLS_BEGIN + "\n".join(CALL_BEGIN + "function" + SEP + name + "\n```json\n"
                                    + compact(args) + "\n```" + CALL_END for name, args in calls)
            + CALLS_END)


def completion(answer, template=V3, json_mode=False):
    """What the model generates for `answer` (an assistant message that may carry
    `reasoning_content`), EOS excluded. Under R1 the prompt ends in "<think>\\n"; a JSON answer
    there starts with the grammar's prefix "</think>\\n\\n" (structured-output.md, R1 models)."""
    if answer.get("tool_calls"):
        body = call_block([(c["function"]["name"], json.loads(c["function"]["arguments"]))
                           for c in answer["tool_calls"]])
    else:
        body = answer["content"]
    if template == R1:
        if json_mode:
            return END_THINK + "\n\n" + body
        return answer["reasoning_content"] + "\n" + END_THINK + "\n\n" + body
    return body


def starts_or_ends_special(a, b):
    """True when the boundary between texts a and b lies next to a special token."""
    return any(a.endswith(s) for s in SPECIALS) or any(b.startswith(s) for s in SPECIALS)


def segments(ex):
    """[(text, trained)] of one training example: the server's prompt (not trained) and the
    completion plus EOS (trained). With ex["train_history"], earlier plain assistant answers are
    trained too, in place; each of them must render as "<｜Assistant｜>" + answer + EOS right where
    the generation prompt would stand (checked), and every cut lies next to a special token, so
    encoding the pieces one by one gives the ids of the whole text."""
    kw = dict(tools=ex.get("tools"), tool_choice=ex.get("tool_choice"),
              template=ex.get("template", V3))
    msgs = ex["messages"]
    prompt = render_prompt(msgs, **kw)
    segs, pos = [], 0
    if ex.get("train_history"):
        for i, m in enumerate(msgs):
            if m["role"] != "assistant" or m.get("content") is None or m.get("tool_calls"):
                continue
            before = render_prompt(msgs[:i], **kw)
            upto = render_prompt(msgs[:i + 1], add_generation_prompt=False, **kw)
            if not (upto == before + m["content"] + EOS and prompt.startswith(upto)
                    and before.endswith(ASSISTANT) and before.startswith(prompt[:pos])):
                raise AssertionError(f"history turn {i} does not render in generation form")
            segs += [(before[pos:], False), (m["content"] + EOS, True)]
            pos = len(upto)
    if pos and not starts_or_ends_special(prompt[:pos], prompt[pos:]):
        raise AssertionError("a cut inside plain text")
    segs += [(prompt[pos:], False), (ex["completion"] + EOS, True)]
    return [(t, tr) for t, tr in segs if t]


def encode(tok, examples):
    """[(ids, trained mask)] of examples: each segment encoded on its own with tok.encode_batch
    (a tokenizers.Tokenizer: special-token text matched, no BOS added), then joined."""
    segs = [segments(ex) for ex in examples]
    flat = [t for s in segs for t, _ in s]
    enc = tok.encode_batch(flat, add_special_tokens=False)
    out, k = [], 0
    for s in segs:
        ids, mask = [], []
        for _, trained in s:
            e = enc[k].ids
            k += 1
            ids += e
            mask += [trained] * len(e)
        out.append((ids, mask))
    return out


def prompt_ids(tok, ex):
    """The ids train.py gives the prompt of ex (every segment but the completion)."""
    ids, mask = encode(tok, [ex])[0]
    n = len(tok.encode_batch([ex["completion"] + EOS], add_special_tokens=False)[0].ids)
    return ids[:len(ids) - n]
