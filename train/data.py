"""data.py - synthetic chat conversations with verifiable answers, for tandem's default model.

Tasks (each asked in several phrasings):
  add    "What is A + B?"             -> "A + B = C."        (A, B up to 4 digits)
  sub    "What is A - B?"             -> "A - B = C."
  rev    "Reverse the word stone."    -> "The word stone reversed is enots."
  count  "How many letters are in the word stone?" -> "The word stone has 5 letters."
  copy   "Repeat this list: 3, 8, 1." -> "3, 8, 1"
  fact   fixed questions about tandem (default port, endpoints, ...)

Agent tasks (agent_example; docs/model-card.md), rendered as the server renders them
(render.py):
  call     tools in the request, one fits   -> a DeepSeek-V3 tool-call block, compact JSON args
  result   a tool call and its result       -> "It is sunny and 21 degrees in Paris."
  no_call  tools in the request, none fits  -> the plain answer
  json     "... Answer in JSON." + response_format -> {"answer":1801}
  think    an old-style question under the deepseek-r1 template -> reasoning, </think>, answer

Every example carries a `check` string that a correct answer must contain; the evaluators
(eval_http.py, train.py) test `check in answer` for the old tasks and score_completion /
eval_http.score for the agent tasks. Deterministic for a given seed; conversation() gives the
same chats for a seed as before the agent tasks existed.
Usage: python3 data.py --seed 1 --n 5 (prints examples as JSON lines; --agent: agent examples,
--mix SHARE: the training mix, --render: with the rendered prompt)
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render  # noqa: E402  (train/render.py: the server's prompt text)

LETTERS = "abcdefghijklmnopqrstuvwxyz"

ADD_Q = ["What is {a} + {b}?", "What is {a} plus {b}?", "Compute {a} + {b}.",
         "Add {a} and {b}.", "What is the sum of {a} and {b}?", "Calculate {a} + {b}.",
         "{a} + {b} = ?", "Please add {a} and {b}."]
SUB_Q = ["What is {a} - {b}?", "What is {a} minus {b}?", "Compute {a} - {b}.",
         "Subtract {b} from {a}.", "What is the difference between {a} and {b}?",
         "Calculate {a} - {b}.", "{a} - {b} = ?", "Please subtract {b} from {a}."]
REV_Q = ["Reverse the word {w}.", "What is {w} spelled backwards?", "Write the word {w} backwards.",
         "Reverse the letters of {w}."]
CNT_Q = ["How many letters are in the word {w}?", "Count the letters in {w}.",
         "How long is the word {w}?", "How many letters does {w} have?"]
CPY_Q = ["Repeat this list: {l}.", "Copy the list: {l}.", "Say this list back to me: {l}.",
         "Echo the list {l}."]
FACTS = [
    (["What is tandem's default port?", "Which port does tandem listen on by default?",
      "What port does tandem use?"],
     "tandem listens on 127.0.0.1 port 8080 by default.", "8080"),
    (["Which endpoints does tandem serve?", "What endpoints does tandem have?",
      "List the HTTP endpoints of tandem."],
     "tandem serves /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics, "
     "/tokenize and /detokenize.", "/v1/chat/completions"),
    (["What is tandem?", "Who are you?", "What are you?"],
     "I am the default model of tandem, an inference server for DeepSeek-V3 models.", "tandem"),
    (["Where does tandem run the routed experts?", "Where do the experts run in tandem?"],
     "tandem runs the routed experts on the CPU and the rest of the model on the GPU.", "CPU"),
    (["What is the health endpoint of tandem?", "How do I check that tandem is up?"],
     "GET /health answers 200 once the model is loaded.", "/health"),
]
SYSTEMS = ["", "", "", "You are a helpful assistant.", "Answer briefly.",
           "You are tandem's default model."]


def number(rng):
    digits = rng.choice([1, 2, 3, 4, 4, 4])
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)


def word(rng):
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 8)))


def example_full(rng):
    """One (question, answer, check, task, params) tuple; params holds the task's values."""
    task = rng.choices(["add", "sub", "rev", "count", "copy", "fact"], [30, 30, 12, 10, 10, 8])[0]
    if task in ("add", "sub"):
        a, b = number(rng), number(rng)
        if task == "add":
            c, q = a + b, rng.choice(ADD_Q).format(a=a, b=b)
            ans = f"{a} + {b} = {c}."
        else:
            c, q = a - b, rng.choice(SUB_Q).format(a=a, b=b)
            ans = f"{a} - {b} = {c}."
        return q, ans, f"= {c}.", task, {"a": a, "b": b, "c": c}
    if task == "rev":
        w = word(rng)
        return (rng.choice(REV_Q).format(w=w), f"The word {w} reversed is {w[::-1]}.", w[::-1], task,
                {"w": w})
    if task == "count":
        w = word(rng)
        return (rng.choice(CNT_Q).format(w=w), f"The word {w} has {len(w)} letters.",
                f"has {len(w)} letters", task, {"w": w})
    if task == "copy":
        items = ", ".join(str(rng.randint(0, 99)) for _ in range(rng.randint(2, 6)))
        return rng.choice(CPY_Q).format(l=items), items, items, task, {"l": items}
    qs, ans, check = rng.choice(FACTS)
    return rng.choice(qs), ans, check, task, {}


def example(rng):
    """One (question, answer, check, task) tuple."""
    return example_full(rng)[:4]


def conversation(rng):
    """A chat: optional system prompt, 1-3 turns; the last turn is the one evaluated."""
    msgs = []
    sysmsg = rng.choice(SYSTEMS)
    if sysmsg:
        msgs.append({"role": "system", "content": sysmsg})
    turns = rng.choices([1, 2, 3], [70, 20, 10])[0]
    for _ in range(turns):
        q, a, check, task = example(rng)
        msgs.append({"role": "user", "content": q})
        msgs.append({"role": "assistant", "content": a})
    return msgs, check, task



# ---------------------------------------------------------------- agent tasks (issue 22)
# Each agent example is a dict: the chat request (`messages`, `tools`, `tool_choice`,
# `response_format`, `template`: deepseek-v3, or deepseek-r1 for the server started with
# --model.template=deepseek-r1), the `completion` the model is trained to generate after the
# rendered prompt (train/render.py), a `check` string that a correct raw completion contains,
# and `expect`, what eval_http.py checks in the API's answer.

CITIES = ["Paris", "London", "Berlin", "Madrid", "Rome", "Oslo", "Tokyo", "Lima", "Cairo", "Delhi",
          "Sydney", "Toronto", "Dublin", "Vienna", "Prague", "Warsaw", "Lisbon", "Athens",
          "Helsinki", "Stockholm", "Moscow", "Beijing", "Seoul", "Bangkok", "Jakarta", "Manila",
          "Nairobi", "Lagos", "Accra", "Dakar", "Santiago", "Bogota", "Quito", "Havana", "Chicago",
          "Boston", "Denver", "Seattle", "Houston", "Miami", "Austin", "Dallas", "Phoenix",
          "Montreal", "Zurich", "Geneva", "Munich", "Hamburg", "Milan", "Naples", "Venice",
          "Porto", "Seville", "Amsterdam", "Brussels", "New York", "San Francisco", "Los Angeles",
          "Hong Kong", "Buenos Aires"]
CONDITIONS = ["sunny", "cloudy", "rainy", "snowy", "windy", "foggy"]


def _fn(name, description, properties, required):
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required}}}


TOOLS = {
    "get_weather": _fn("get_weather", "Get the current weather in a city.",
                       {"city": {"type": "string", "description": "The city name."}}, ["city"]),
    "get_time": _fn("get_time", "Get the local time in a city.",
                    {"city": {"type": "string", "description": "The city name."}}, ["city"]),
    "add": _fn("add", "Add two integers.", {"a": {"type": "integer"}, "b": {"type": "integer"}},
               ["a", "b"]),
    # never the right tool for any question here: the model learns to read the names
    "send_email": _fn("send_email", "Send an email.",
                      {"to": {"type": "string"}, "body": {"type": "string"}}, ["to", "body"]),
}
WEATHER_Q = ["What is the weather in {c}?", "How is the weather in {c}?", "Weather in {c}?",
             "What's the weather like in {c} today?", "Tell me the weather in {c}.",
             "Is it sunny in {c}?"]
TIME_Q = ["What time is it in {c}?", "What is the local time in {c}?", "Tell me the time in {c}.",
          "Time in {c}?"]
JSON_ASK = ["Answer in JSON.", "Reply with a JSON object.", "Respond in JSON.",
            "Give the answer as JSON."]
JSON_SYSTEMS = ["Reply in JSON.", "Answer with a JSON object with the key answer."]
AGENT_TASKS = ["call", "result", "no_call", "json", "think"]
AGENT_WEIGHTS = [30, 25, 10, 15, 20]


def city(rng):
    if rng.random() < 0.6:
        return rng.choice(CITIES)
    return word(rng).capitalize()


def compact(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def tool_use(rng, name):
    """A question that `name` answers: (question, arguments, tool result text, answer, check)."""
    if name == "add":
        a, b = number(rng), number(rng)
        res = rng.choice([compact({"result": a + b}), str(a + b)])
        return (rng.choice(ADD_Q).format(a=a, b=b), {"a": a, "b": b}, res,
                f"{a} + {b} = {a + b}.", f"= {a + b}.")
    c = city(rng)
    if name == "get_weather":
        t, cond = rng.randint(-9, 35), rng.choice(CONDITIONS)
        res = rng.choice([compact({"city": c, "temperature": t, "condition": cond}),
                          compact({"temperature": t, "condition": cond}),
                          compact({"temp_c": t, "sky": cond}), f"{cond}, {t} degrees"])
        return (rng.choice(WEATHER_Q).format(c=c), {"city": c}, res,
                f"It is {cond} and {t} degrees in {c}.", f"{cond} and {t} degrees")
    hm = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
    res = rng.choice([compact({"time": hm}), compact({"city": c, "time": hm}), hm])
    return rng.choice(TIME_Q).format(c=c), {"city": c}, res, f"It is {hm} in {c}.", f"It is {hm}"


def pick_tools(rng, must=None, avoid=()):
    """1-3 tool definitions in random order, with `must` among them and none of `avoid`."""
    names = [n for n in TOOLS if n != must and n not in avoid]
    rng.shuffle(names)
    names = names[:rng.randint(0 if must else 1, 2)] + ([must] if must else [])
    rng.shuffle(names)
    return [TOOLS[n] for n in names]


def call_message(name, args):
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": name, "arguments": compact(args)}}]}


def call_check(name, args):
    """The part of a generated tool-call block that must be exactly so."""
    return "<｜tool▁call▁begin｜>function<｜tool▁sep｜>" + name + "\n```json\n" + compact(args) + \
        "\n```<｜tool▁call▁end｜>"


def reasoning(task, p):
    """R1-style reasoning for an old-style question: (text, check)."""
    if task == "add":
        s = f"{p['a']} + {p['b']} = {p['c']}"
        return f"I add {p['a']} and {p['b']}: {s}.", s
    if task == "sub":
        s = f"{p['a']} - {p['b']} = {p['c']}"
        return f"I subtract {p['b']} from {p['a']}: {s}.", s
    if task in ("rev", "count"):
        w = p["w"]
        if task == "rev":
            s = ", ".join(w[::-1])
            return f"The letters of {w} are {', '.join(w)}. Backwards they are {s}.", s
        s = f"That is {len(w)} letters"
        return f"The letters of {w} are {', '.join(w)}. {s}.", s
    if task == "copy":
        return f"The list is {p['l']}. I repeat it.", p["l"]
    return "The question is about tandem.", "about tandem"


def _history(rng, msgs, avoid_add=False):
    """Maybe one earlier old-style turn (not trained on in agent examples)."""
    if rng.random() < 0.25:
        while True:
            q, a, _, task = example(rng)
            if not (avoid_add and task == "add"):
                break
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def agent_example(rng, weights=None):
    """One agent example (a dict, see above) with the task drawn by `weights` (AGENT_TASKS)."""
    task = rng.choices(AGENT_TASKS, weights or AGENT_WEIGHTS)[0]
    ex = {"task": task, "template": "deepseek-v3", "tools": None, "tool_choice": None,
          "response_format": None}
    msgs = []
    sysmsg = rng.choice(SYSTEMS)
    if task in ("call", "result"):
        name = rng.choices(["get_weather", "get_time", "add"], [45, 25, 30])[0]
        tools = pick_tools(rng, must=name)
        if sysmsg:
            msgs.append({"role": "system", "content": sysmsg})
        _history(rng, msgs, avoid_add=any(t["function"]["name"] == "add" for t in tools))
        q, args, res, ans, check = tool_use(rng, name)
        msgs.append({"role": "user", "content": q})
        call = call_message(name, args)
        if task == "call":
            ex["tool_choice"] = rng.choices(
                [None, "auto", "required", {"type": "function", "function": {"name": name}}],
                [70, 10, 10, 10])[0]
            ex.update(tools=tools, messages=msgs, completion=render.completion(call),
                      check=call_check(name, args), expect={"call": [name, args]})
            return ex
        msgs += [call, {"role": "tool", "tool_call_id": "call_1", "content": res}]
        mode = rng.choices(["auto", "none", "absent"], [70, 15, 15])[0]
        if mode != "absent":
            ex["tools"] = tools
        if mode == "none":
            ex["tool_choice"] = "none"
        ex.update(messages=msgs, completion=ans, check=check, expect={"content": check})
        return ex
    if task == "no_call":
        if sysmsg:
            msgs.append({"role": "system", "content": sysmsg})
        tools = pick_tools(rng)
        has_add = any(t["function"]["name"] == "add" for t in tools)
        _history(rng, msgs, avoid_add=has_add)
        while True:
            q, a, check, old = example(rng)
            if not (has_add and old == "add"):
                break
        msgs.append({"role": "user", "content": q})
        ex.update(tools=tools, messages=msgs, completion=a, check=check, expect={"content": check},
                  old_task=old)
        return ex
    q, a, check, old, p = example_full(rng)
    if task == "json":
        while old not in ("add", "sub", "count", "rev"):
            q, a, check, old, p = example_full(rng)
        v = p["w"][::-1] if old == "rev" else len(p["w"]) if old == "count" else p["c"]
        if rng.random() < 0.3:
            msgs.append({"role": "system", "content": rng.choice(JSON_SYSTEMS)})
        else:
            if sysmsg:
                msgs.append({"role": "system", "content": sysmsg})
            q = q + " " + rng.choice(JSON_ASK)
        msgs.append({"role": "user", "content": q})
        if rng.random() < 0.4:
            ex["response_format"] = {"type": "json_object"}
        else:
            ex["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "answer", "strict": True, "schema": {
                    "type": "object",
                    "properties": {"answer": {"type": "string" if old == "rev" else "integer"}},
                    "required": ["answer"], "additionalProperties": False}}}
        if rng.random() < 0.15:
            ex["template"] = "deepseek-r1"
        body = compact({"answer": v})
        ex.update(messages=msgs, check=body, expect={"json": {"answer": v}}, old_task=old,
                  completion=render.completion({"content": body}, ex["template"],
                                                  json_mode=True))
        return ex
    # think: R1-style reasoning, under the server's deepseek-r1 template
    if sysmsg:
        msgs.append({"role": "system", "content": sysmsg})
    _history(rng, msgs)
    msgs.append({"role": "user", "content": q})
    r, rcheck = reasoning(old, p)
    ex.update(template="deepseek-r1", messages=msgs, check=check, check_reasoning=rcheck,
              expect={"content": check, "reasoning": rcheck}, old_task=old,
              completion=render.completion({"content": a, "reasoning_content": r},
                                              "deepseek-r1"))
    return ex


def chat_example(rng):
    """An old-style conversation in the agent examples' form (every answer is trained)."""
    msgs, check, task = conversation(rng)
    return {"task": task, "template": "deepseek-v3", "tools": None, "tool_choice": None,
            "response_format": None, "messages": msgs[:-1], "completion": msgs[-1]["content"],
            "check": check, "expect": {"content": check}, "train_history": True}


def training_example(rng, agent_share=0.2, agent_weights=None):
    """The training mix: agent examples with probability agent_share (the task drawn by
    agent_weights, AGENT_WEIGHTS when None), else old-style chats."""
    if rng.random() < agent_share:
        return agent_example(rng, agent_weights)
    return chat_example(rng)


def eval_examples(seed, n, agent_n=0):
    """The held-out set: n old-style chats (the same ones as data.conversation with this seed
    gives, as eval_http.py always sent) and agent_n agent examples, tasks drawn evenly, from a
    generator of their own (seed + 1000003)."""
    rng = random.Random(seed)
    exs = [chat_example(rng) for _ in range(n)]
    arng = random.Random(seed + 1000003)
    return exs + [agent_example(arng, [1] * len(AGENT_TASKS)) for _ in range(agent_n)]


def score_completion(ex, text):
    """Is a raw generated completion (special tokens as text, EOS excluded) correct?"""
    if ex["task"] == "think":
        r, sep, a = text.partition("</think>")
        return bool(sep) and ex["check_reasoning"] in r and ex["check"] in a
    if ex["task"] in ("result", "no_call") and "<｜tool▁calls▁begin｜>" in text:
        return False
    if ex["task"] == "call":
        return text.startswith("<｜tool▁calls▁begin｜>") and ex["check"] in text
    if ex["task"] == "json":
        return text.endswith(ex["check"])
    return ex["check"] in text

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--agent", action="store_true", help="agent examples (tasks drawn evenly)")
    ap.add_argument("--mix", type=float, default=None, help="the training mix with this agent share")
    ap.add_argument("--render", action="store_true", help="add the rendered prompt")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    for _ in range(args.n):
        if args.agent or args.mix is not None:
            ex = agent_example(rng, [1] * len(AGENT_TASKS)) if args.agent else \
                training_example(rng, args.mix)
            if args.render:
                ex["prompt"] = render.render_prompt(ex["messages"], ex["tools"], ex["tool_choice"],
                                                    template=ex["template"])
            print(json.dumps(ex, ensure_ascii=False))
        else:
            msgs, check, task = conversation(rng)
            print(json.dumps({"messages": msgs, "check": check, "task": task}))


if __name__ == "__main__":
    main()
