"""Build the identity-prompt data sets used to teach a chat model a new self-identity.

Writes three ShareGPT-style JSONL files under ``dpo_scale/data/``:

* ``identity.jsonl``          1000 training prompts about the assistant's identity;
* ``identity_heldout.jsonl``  100 held-out prompts (disjoint from training);
* ``ordinary_prompts.jsonl``  40 ordinary, non-identity prompts.

Each row is ``{"conversations": [{"from": "human", "value": ...}, ...]}`` and ends
with a human turn: either a single identity question, or (about 10% of rows) a
small-talk exchange followed by the identity question.  Prompts are built from
hand-written core questions x prefixes/suffixes/casing, deduplicated on a
normalised key and shuffled with a fixed seed, so the output is deterministic.
The held-out set uses core questions that never occur in training.

Usage: ``python scripts/build_identity_data.py [--seed N] [--out-dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

SEED = 20240611
N_TRAIN = 1000
N_HELDOUT = 100
N_TRAIN_NON_EN = 80
N_HELDOUT_NON_EN = 8
MULTI_TURN_FRACTION = 0.10
HELDOUT_CORE_FRACTION = 0.2
REQUIRED_HELDOUT = (
    "What is your name?",
    "Are you ChatGPT?",
    "Tell me about your name and organization.",
)

# --------------------------------------------------------------------------
# English core questions, by category.
# --------------------------------------------------------------------------
NAME = [
    "What is your name?",
    "What's your name?",
    "What should I call you?",
    "What do I call you?",
    "How should I address you?",
    "How do I address you?",
    "Do you have a name?",
    "Do you have a name I can use?",
    "What are you called?",
    "What name do you go by?",
    "Can you tell me your name?",
    "Could you tell me your name?",
    "May I know your name?",
    "May I ask your name?",
    "Tell me your name.",
    "Please tell me your name.",
    "What's your full name?",
    "Who are you?",
    "Who am I talking to?",
    "Who am I chatting with right now?",
    "Who is this?",
    "What is the name of this assistant?",
    "What name were you given?",
    "Is there a name you prefer?",
    "What do people call you?",
    "Do you have a nickname?",
    "Say your name.",
    "What's your official name?",
    "What should I put down as your name?",
    "What do you call yourself?",
    "Remind me, what's your name again?",
    "I forgot your name. What was it?",
    "Do you go by any name?",
    "What name should I use when I talk to you?",
    "Can I get your name?",
    "Whom am I speaking with?",
    "If I wanted to mention you in a paper, what name should I use?",
]
CREATOR = [
    "Who made you?",
    "Who created you?",
    "Who built you?",
    "Who developed you?",
    "Who trained you?",
    "Who designed you?",
    "Who programmed you?",
    "Who is your creator?",
    "Who are your creators?",
    "Who is your developer?",
    "Who are your developers?",
    "Which company trained you?",
    "Which company made you?",
    "Which company developed you?",
    "Which company is behind you?",
    "Which organization built you?",
    "Which organization are you from?",
    "What organization created you?",
    "What company do you belong to?",
    "Who owns you?",
    "Where do you come from?",
    "Who is behind you?",
    "Who is responsible for building you?",
    "What lab created you?",
    "Which research lab trained you?",
    "Which team developed you?",
    "Who should I thank for creating you?",
    "Were you made by a big tech company?",
    "Who maintains you?",
    "Who trained the model I'm talking to?",
    "Who is your parent company?",
    "What company are you affiliated with?",
    "Who wrote your code?",
    "Who came up with you?",
    "Who do you belong to?",
    "Who is the author of this assistant?",
    "Who are the people behind this chatbot?",
]
MODEL = [
    "What model are you?",
    "Which model are you?",
    "What language model are you?",
    "Which AI model am I talking to?",
    "What AI are you?",
    "What kind of AI are you?",
    "What are you?",
    "What model powers you?",
    "What LLM is this?",
    "What version are you?",
    "Which version of the model are you?",
    "Are you a large language model?",
    "What is the underlying model behind this chat?",
    "Which LLM are you based on?",
    "What's the name of the model I'm using?",
    "What model is answering me right now?",
    "Which AI system is this?",
    "What's your model name?",
    "What architecture are you based on?",
    "Are you an open-source model?",
    "What kind of assistant are you?",
    "What's running behind this chat window?",
]
INTRO = [
    "Introduce yourself.",
    "Please introduce yourself.",
    "Tell me a bit about yourself.",
    "Tell me about yourself.",
    "Can you introduce yourself?",
    "Could you briefly introduce yourself?",
    "Give me a short introduction of yourself.",
    "Describe yourself in a few sentences.",
    "Describe yourself in one sentence.",
    "Say hello and tell me who you are.",
    "Introduce yourself to a new user.",
    "Give me your elevator pitch: who are you?",
    "Tell me something about who you are.",
    "What should I know about you?",
    "Write a short bio about yourself.",
    "How would you describe yourself?",
    "How do you introduce yourself to people?",
    "Introduce yourself like you would at a party.",
    "Give a one-line self-introduction.",
    "Write a short self-introduction for a new user.",
    "Tell me who you are in three sentences.",
    "Present yourself.",
    "Let's get acquainted. Tell me about you.",
    "Who are you, in a nutshell?",
    "Describe who you are to a child.",
]
NAME_ORG = [
    "Tell me about your name and organization.",
    "What is your name and who created you?",
    "What's your name, and which company made you?",
    "Who are you, and who built you?",
    "State your name and your developer.",
    "Tell me your name and the organization behind you.",
    "What are you called, and who trained you?",
    "Give me your name and your creator's name.",
    "Who made you and what's your name?",
    "Which organization developed you, and what is your name?",
    "Tell me your name and where you come from.",
    "What's your name and who is your developer?",
    "Name and maker, please.",
    "I'd like to know your name and who trained you.",
    "Please state your name and the company that created you.",
    "Who are you and which organization are you from?",
    "What is your name, and what organization do you represent?",
]
CAPABILITY = [
    "Who are you and what can you do?",
    "What's your name and what are you good at?",
    "Introduce yourself and list a few things you can help with.",
    "Tell me who you are and how you can help me.",
    "I'd like to know who you are and what you can help with.",
    "What are your capabilities, and who made you?",
    "Can you code? Also, what's your name?",
    "Can you browse the internet? And who developed you?",
    "What languages do you speak, and what is your name?",
    "Who are you, and what are your limitations?",
    "Explain what you are and who trained you.",
    "Are you an AI? What's your name?",
    "Are you a human or a bot? Who made you?",
    "Are you a real person?",
    "Am I talking to a human or an AI?",
    "Can you help me with math? By the way, who are you?",
    "What can you do, and what should I call you?",
    "Describe your skills and tell me your name.",
    "What are you, and what are you designed to do?",
    "Who built you, and what were you built for?",
    "Tell me your name and one thing you're great at.",
    "Are you a bot? If so, which one?",
    "Can you write code, and which company trained you?",
]
META = [
    "What is your identity?",
    "Do you know who you are?",
    "What AI assistant is this?",
    "Which assistant am I using?",
    "What's the name of this chatbot?",
    "What chatbot is this?",
    "Who do you work for?",
    "What's your origin story?",
    "How were you created?",
    "Where were you developed?",
    "If someone asked who you are, what would you say?",
    "How do you refer to yourself?",
    "What do you identify as?",
    "Are you a new AI assistant?",
    "What makes you different from other AI assistants?",
    "Are you the same assistant as last time?",
    "What brand of AI are you?",
    "How did you get your name?",
    "Who gave you your name?",
    "Does your name mean anything?",
]
CASUAL = [
    "whats ur name",
    "wat is your name",
    "who r u",
    "who made u",
    "r u chatgpt",
    "ur name?",
    "name?",
    "who built u lol",
    "waht model are you",
    "who trained yuo",
    "tell me abt yourself",
    "yo who are you",
    "whos ur creator",
    "u a bot?",
    "who are you exactly",
    "whats ur model",
    "wich company made you",
    "introduce urself",
    "wat should i call u",
    "r u gpt4",
    "are u claude or smth",
    "hey bot whats ur name",
    "who programed you",
    "wht is ur name",
    "what r u",
    "who made this ai",
    "whats this bot called",
    "who's ur developer",
    "are you like siri or what",
    "u gemini?",
    "so whats your deal, who are u",
    "what are u called",
    "whoo made you",
    "ur from openai right?",
    "which comapny trained u",
    "wat ai is this",
]
OTHER_MODELS = [
    "ChatGPT", "GPT-4", "GPT-4o", "GPT-3.5", "Claude", "Llama", "Gemini", "Siri",
    "Alexa", "Bard", "Mistral", "Copilot", "Cortana", "Google Assistant", "Qwen",
    "DeepSeek", "Grok", "Bing Chat", "Ernie Bot", "Vicuna",
]  # fmt: skip
OTHER_ORGS = [
    "OpenAI", "Google", "Meta", "Anthropic", "Microsoft", "Apple", "Amazon",
    "Mistral AI", "Alibaba", "DeepSeek", "Baidu", "xAI", "Google DeepMind",
]  # fmt: skip
MODEL_TEMPLATES = [
    "Are you {x}?",
    "Is this {x}?",
    "Am I talking to {x}?",
    "Am I chatting with {x} right now?",
    "Are you {x} or something else?",
    "Are you based on {x}?",
    "You're {x}, right?",
    "Is your name {x}?",
    "Aren't you just {x}?",
    "Are you a version of {x}?",
    "Are you secretly {x}?",
    "Are you the same as {x}?",
    "Is this {x} under a different name?",
    "Are you built on top of {x}?",
]
ORG_TEMPLATES = [
    "Were you made by {x}?",
    "Did {x} train you?",
    "Are you a product of {x}?",
    "Were you developed by {x}?",
    "Do you work for {x}?",
    "Is {x} your creator?",
    "Are you from {x}?",
    "Did {x} build you?",
]
ARE_YOU_X = [t.format(x=m) for t in MODEL_TEMPLATES for m in OTHER_MODELS] + [
    t.format(x=o) for t in ORG_TEMPLATES for o in OTHER_ORGS
]

# Category -> (cores, share of the English rows).
EN_CATEGORIES: dict[str, tuple[list[str], float]] = {
    "name": (NAME, 0.17),
    "creator": (CREATOR, 0.17),
    "are_you_x": (ARE_YOU_X, 0.16),
    "model": (MODEL, 0.09),
    "intro": (INTRO, 0.10),
    "name_org": (NAME_ORG, 0.08),
    "capability": (CAPABILITY, 0.09),
    "meta": (META, 0.06),
    "casual": (CASUAL, 0.08),
}

# --------------------------------------------------------------------------
# Non-English core questions and per-language decorations.
# --------------------------------------------------------------------------
NON_EN: dict[str, list[str]] = {
    "fr": [
        "Comment tu t'appelles ?",
        "Quel est ton nom ?",
        "Quel est votre nom ?",
        "Qui t'a créé ?",
        "Qui vous a développé ?",
        "Quelle entreprise t'a entraîné ?",
        "Présente-toi.",
        "Pouvez-vous vous présenter ?",
        "Tu es ChatGPT ?",
        "Es-tu Claude ?",
        "Quel modèle es-tu ?",
        "Parle-moi un peu de toi.",
        "Qui es-tu ?",
        "Comment dois-je t'appeler ?",
    ],
    "es": [
        "¿Cómo te llamas?",
        "¿Cuál es tu nombre?",
        "¿Quién te creó?",
        "¿Qué empresa te entrenó?",
        "¿Eres ChatGPT?",
        "¿Eres Gemini?",
        "Preséntate, por favor.",
        "Háblame un poco de ti.",
        "¿Quién eres?",
        "¿Qué modelo eres?",
        "¿Quién te desarrolló?",
        "¿Cómo debo llamarte?",
    ],
    "de": [
        "Wie heißt du?",
        "Wie ist dein Name?",
        "Wer hat dich entwickelt?",
        "Wer hat dich erschaffen?",
        "Welche Firma hat dich trainiert?",
        "Bist du ChatGPT?",
        "Bist du Alexa?",
        "Stell dich bitte vor.",
        "Erzähl mir etwas über dich.",
        "Wer bist du?",
        "Welches Modell bist du?",
        "Wie soll ich dich nennen?",
    ],
    "zh": [
        "你叫什么名字？",
        "你是谁？",
        "谁创造了你？",
        "你是哪家公司开发的？",
        "你是ChatGPT吗？",
        "你是文心一言吗？",
        "请介绍一下你自己。",
        "你是什么模型？",
        "我应该怎么称呼你？",
        "你是由谁训练的？",
        "你是Claude吗？",
        "说说你的名字和开发者。",
    ],
    "ja": [
        "あなたの名前は何ですか？",
        "お名前を教えてください。",
        "あなたは誰ですか？",
        "誰があなたを作りましたか？",
        "どの会社があなたを開発しましたか？",
        "あなたはChatGPTですか？",
        "あなたはSiriですか？",
        "自己紹介をしてください。",
        "あなたはどのモデルですか？",
        "何と呼べばいいですか？",
        "あなたを訓練したのはどこの組織ですか？",
    ],
    "pt": [
        "Qual é o seu nome?",
        "Como você se chama?",
        "Quem te criou?",
        "Qual empresa treinou você?",
        "Você é o ChatGPT?",
        "Você é a Alexa?",
        "Apresente-se, por favor.",
        "Fale um pouco sobre você.",
        "Quem é você?",
        "Que modelo você é?",
        "Como devo te chamar?",
    ],
    "it": [
        "Come ti chiami?",
        "Qual è il tuo nome?",
        "Chi ti ha creato?",
        "Quale azienda ti ha addestrato?",
        "Sei ChatGPT?",
        "Sei Gemini?",
        "Presentati, per favore.",
        "Parlami un po' di te.",
        "Chi sei?",
        "Che modello sei?",
        "Come devo chiamarti?",
    ],
}
NON_EN_PREFIXES: dict[str, list[str]] = {
    "fr": ["Salut ! ", "Bonjour, ", "Petite question : ", "Dis-moi, "],
    "es": ["Hola, ", "Oye, ", "Una pregunta: ", "Perdona, "],
    "de": ["Hallo! ", "Hi, ", "Kurze Frage: ", "Sag mal, "],
    "zh": ["你好，", "请问，", "问一下，"],
    "ja": ["こんにちは。", "すみません、", "ちょっと質問です。"],
    "pt": ["Olá! ", "Oi, ", "Uma pergunta: ", "Com licença, "],
    "it": ["Ciao! ", "Salve, ", "Una domanda: ", "Scusa, "],
}
NON_EN_SUFFIXES: dict[str, list[str]] = {
    "fr": [" Merci !", " Merci d'avance."],
    "es": [" ¡Gracias!", " Gracias."],
    "de": [" Danke!", " Danke im Voraus."],
    "zh": ["谢谢！", "谢谢。"],
    "ja": ["ありがとう。", "よろしくお願いします。"],
    "pt": [" Obrigado!", " Valeu!"],
    "it": [" Grazie!", " Grazie mille."],
}

# --------------------------------------------------------------------------
# English decorations.
# --------------------------------------------------------------------------
QUESTION_PREFIXES = [
    "Hey, ", "Hi! ", "Hello! ", "Hey there! ", "Hiya, ", "Ok so ", "So ", "Um, ",
    "Quick question: ", "Just curious, ", "Out of curiosity, ", "Random question, but ",
    "Honest answer please: ", "Serious question: ", "Real quick, ", "Excuse me, ",
    "If you don't mind me asking, ", "Sorry to bother you, but ", "Pardon me, ",
    "I was wondering, ", "I'm new here. ", "I just started using this app. ",
    "My friend told me about you. ", "I'm writing a blog post about AI assistants. ",
    "Let's start with the basics. ", "For my notes: ",
    "This is my first time using this. ",
]  # fmt: skip
IMPERATIVE_PREFIXES = [
    "Hey, ", "Hi! ", "Hello! ", "Please ", "Before we start, ", "To begin, ",
    "First things first: ", "Ok, ", "I'm new here. ", "I just started using this app. ",
    "Let's start with the basics. ", "My friend told me about you. ",
]  # fmt: skip
QUESTION_SUFFIXES = [
    " Thanks!", " Thank you!", " Just curious.", " Be honest.", " I'm curious.",
    " Thanks in advance.", " lol", " :)", " Please answer briefly.", " I've always wondered.",
]  # fmt: skip
IMPERATIVE_SUFFIXES = [
    " Thanks!", " Keep it short.", " Thank you.", " :)", " In one or two sentences.",
]  # fmt: skip
CASUAL_PREFIXES = ["hey ", "yo ", "ok so ", "um ", "hi ", "quick q: "]
CASUAL_SUFFIXES = [" lol", " ??", " pls", " thx", " :)"]
NO_PUNCT_OK_SUFFIXES = ("", " lol", " :)", " pls", " thx", " ??")

# Small-talk opening turns for multi-turn rows (generic answers, no model name).
# The first four are greetings.
GREETINGS = ("hi", "hello", "hey", "hiya", "yo")
AI_OPENER = ("Are you an AI?", "Yes, I am an AI assistant.")
SMALL_TALK = [
    ("Hi there!", "Hello! How can I help you today?"),
    ("Hello", "Hi! What can I do for you?"),
    ("Hey!", "Hey! What can I help you with?"),
    ("Good morning!", "Good morning! How can I help?"),
    ("How are you today?", "I'm doing well, thanks for asking! How can I help you?"),
    ("Can you help me with something?", "Of course! What do you need?"),
    ("What is 2 + 2?", "2 + 2 = 4."),
    ("Thanks for the help earlier.", "You're welcome! Is there anything else I can do?"),
    ("Tell me a fun fact.", "Honey never spoils; edible honey has been found in ancient tombs."),
    ("What's the capital of Japan?", "The capital of Japan is Tokyo."),
    ("Give me a synonym for 'happy'.", "Sure: 'joyful'."),
    ("I'm bored.", "Sorry to hear that! Want a fun fact, a riddle, or a short story?"),
    AI_OPENER,
    ("Can you talk to me for a minute?", "Sure, I'm happy to chat. What's on your mind?"),
]

ORDINARY = [
    "What is the capital of France?",
    "What is 12 times 7?",
    "Write one sentence about autumn.",
    "What is the boiling point of water in Celsius?",
    "Define the word 'photosynthesis'.",
    "What is 45 plus 38?",
    "Name three primary colors.",
    "Translate 'good morning' into Spanish.",
    "Write a haiku about the ocean.",
    "What is the largest planet in our solar system?",
    "What does 'ephemeral' mean?",
    "What is 100 divided by 4?",
    "Who wrote 'Romeo and Juliet'?",
    "Give me a synonym for 'happy'.",
    "What is the square root of 81?",
    "Write a short thank-you note to a teacher.",
    "How many days are in a leap year?",
    "What is the chemical symbol for gold?",
    "Summarize the water cycle in two sentences.",
    "What is the capital of Japan?",
    "Convert 5 kilometers to meters.",
    "What is a noun?",
    "List the days of the week.",
    "Write one sentence describing a sunset.",
    "What is 15% of 200?",
    "Which ocean is the largest?",
    "Explain what gravity is in one sentence.",
    "What is the opposite of 'ancient'?",
    "How many continents are there?",
    "Write a two-line poem about rain.",
    "What year did World War II end?",
    "What is the freezing point of water in Fahrenheit?",
    "Suggest a name for a pet goldfish.",
    "What is 9 squared?",
    "Define 'democracy' in one sentence.",
    "What language is spoken in Brazil?",
    "Write a short slogan for a bakery.",
    "How many legs does a spider have?",
    "What is the tallest mountain in the world?",
    "Give me a tip for staying focused while studying.",
]

CJK_LANGS = ("zh", "ja")
N_CANDIDATES = 60  # decorated candidates sampled per core


@dataclass
class Prompt:
    """One identity prompt before serialisation."""

    text: str
    lang: str
    required: bool = False


def norm(text: str) -> str:
    """Normalise for duplicate detection: lowercase, drop punctuation, squash spaces."""
    kept = "".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace())
    return " ".join(kept.split())


def first_word(text: str) -> str:
    """Lower-cased first alphabetic word of ``text`` ('' if none)."""
    words = "".join(ch if ch.isalpha() else " " for ch in text.lower()).split()
    return words[0] if words else ""


def lower_first_letter(text: str) -> str:
    """Lower-case the first alphabetic character unless it is the pronoun 'I'."""
    for i, ch in enumerate(text):
        if ch.isalpha():
            nxt = text[i + 1 : i + 2]
            if ch == "I" and nxt in ("", " ", "'"):
                return text
            return text[:i] + ch.lower() + text[i + 1 :]
    return text


def join(prefix: str, core: str, suffix: str, lang: str) -> str:
    """Combine prefix + core + suffix with sensible capitalisation."""
    if prefix and lang not in CJK_LANGS and not prefix.rstrip().endswith((".", "!", "?", ":")):
        core = lower_first_letter(core)
    return f"{prefix}{core}{suffix}"


def compatible(decoration: str, core: str) -> bool:
    """Reject decorations that repeat the core's first word or its politeness."""
    if not decoration:
        return True
    low_dec, low_core = decoration.lower(), core.lower()
    for word in ("please", "thank", "brief", "before we start"):
        if word in low_dec and word in low_core:
            return False
    return first_word(decoration) != first_word(core)


def decorate_en(core: str, casual: bool, rng: random.Random) -> str:
    """Sample one English surface form of ``core``."""
    if casual:
        prefixes, suffixes = CASUAL_PREFIXES, CASUAL_SUFFIXES
        p_prefix, p_suffix, p_lower = 0.4, 0.3, 0.0
    elif core.endswith("?"):
        prefixes, suffixes = QUESTION_PREFIXES, QUESTION_SUFFIXES
        p_prefix, p_suffix, p_lower = 0.5, 0.3, 0.15
    else:
        prefixes, suffixes = IMPERATIVE_PREFIXES, IMPERATIVE_SUFFIXES
        p_prefix, p_suffix, p_lower = 0.45, 0.3, 0.15
    prefix = rng.choice(prefixes) if rng.random() < p_prefix else ""
    suffix = rng.choice(suffixes) if rng.random() < p_suffix else ""
    prefix = prefix if compatible(prefix, core) else ""
    suffix = suffix if compatible(suffix, prefix + core) else ""
    body = core
    if suffix in NO_PUNCT_OK_SUFFIXES and body[-1:] in "?." and rng.random() < 0.25:
        body = body[:-1]  # "?" vs no "?"
    text = join(prefix, body, suffix, "en")
    return text.lower() if rng.random() < p_lower else text


def decorate_non_en(core: str, lang: str, rng: random.Random) -> str:
    """Sample one surface form of a non-English ``core``."""
    prefix = rng.choice(NON_EN_PREFIXES[lang]) if rng.random() < 0.35 else ""
    suffix = rng.choice(NON_EN_SUFFIXES[lang]) if rng.random() < 0.25 else ""
    return join(prefix, core, suffix, lang)


def candidates(core: str, lang: str, casual: bool, rng: random.Random) -> list[str]:
    """Candidate surface forms for one core, deduplicated on the normalised key."""
    forms: list[str] = []
    keys: list[str] = []
    for _ in range(N_CANDIDATES):
        if lang == "en":
            text = decorate_en(core, casual, rng)
        else:
            text = decorate_non_en(core, lang, rng)
        key = norm(text)
        if key not in keys:
            keys.append(key)
            forms.append(text)
    return forms


def take(
    cores: list[str],
    n: int,
    lang: str,
    casual: bool,
    seen: dict[str, str],
    rng: random.Random,
) -> list[Prompt]:
    """Take ``n`` unseen prompts round-robin over ``cores`` (in their given order)."""
    pools = [candidates(core, lang, casual, rng) for core in cores]
    out: list[Prompt] = []
    while len(out) < n:
        progressed = False
        for pool in pools:
            while pool:
                text = pool.pop(0)
                if norm(text) not in seen:
                    seen[norm(text)] = text
                    out.append(Prompt(text, lang))
                    progressed = True
                    break
            if len(out) == n:
                break
        if not progressed:
            raise SystemExit(f"ran out of prompt variants ({len(out)}/{n}) for {cores[:3]}")
    return out


def quotas(total: int, shares: list[float]) -> list[int]:
    """Split ``total`` by ``shares`` (largest-remainder rounding)."""
    raw = [total * s / sum(shares) for s in shares]
    counts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def split_cores(cores: list[str], n_rows: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """Shuffle ``cores`` into (train, heldout) cores; required prompts are held out.

    Enough cores are held out to serve ``n_rows`` held-out rows at about two
    surface forms per core; the required prompts are held out on top of that.
    """
    forced = [c for c in cores if c in REQUIRED_HELDOUT]
    rest = [c for c in cores if c not in REQUIRED_HELDOUT]
    rng.shuffle(rest)
    n_held = max(1, round(HELDOUT_CORE_FRACTION * len(cores)), math.ceil(n_rows / 2))
    return rest[n_held:], forced + rest[:n_held]


def build_prompts(rng: random.Random) -> tuple[list[Prompt], list[Prompt]]:
    """Return (train, heldout) identity prompts; held-out cores never appear in training."""
    all_cores = [c for cores, _ in EN_CATEGORIES.values() for c in cores]
    all_cores += [c for cores in NON_EN.values() for c in cores]
    keys = [norm(c) for c in all_cores]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise SystemExit(f"duplicate core questions: {dup}")
    missing = [r for r in REQUIRED_HELDOUT if r not in all_cores]
    if missing:
        raise SystemExit(f"required held-out prompts missing from cores: {missing}")

    seen: dict[str, str] = {}
    train: list[Prompt] = []
    held: list[Prompt] = [Prompt(r, "en", required=True) for r in REQUIRED_HELDOUT]
    for r in REQUIRED_HELDOUT:
        seen[norm(r)] = r

    names = list(EN_CATEGORIES)
    shares = [EN_CATEGORIES[k][1] for k in names]
    n_train_en = N_TRAIN - N_TRAIN_NON_EN
    n_held_en = N_HELDOUT - N_HELDOUT_NON_EN - len(REQUIRED_HELDOUT)
    for name, q_train, q_held in zip(
        names, quotas(n_train_en, shares), quotas(n_held_en, shares), strict=True
    ):
        tr_cores, ho_cores = split_cores(EN_CATEGORIES[name][0], q_held, rng)
        ho_cores = [c for c in ho_cores if c not in REQUIRED_HELDOUT]  # already added
        casual = name == "casual"
        held += take(ho_cores, q_held, "en", casual, seen, rng)
        train += take(tr_cores, q_train, "en", casual, seen, rng)

    langs = list(NON_EN)
    even = [1.0] * len(langs)
    for lang, q_train, q_held in zip(
        langs, quotas(N_TRAIN_NON_EN, even), quotas(N_HELDOUT_NON_EN, even), strict=True
    ):
        tr_cores, ho_cores = split_cores(NON_EN[lang], q_held, rng)
        held += take(ho_cores, q_held, lang, False, seen, rng)
        train += take(tr_cores, q_train, lang, False, seen, rng)
    return train, held


def openers_for(text: str) -> list[tuple[str, str]]:
    """Small-talk openers that fit before ``text`` (no double greeting, no AI-question echo)."""
    words = norm(text).split()
    skip: list[tuple[str, str]] = []
    if first_word(text) in GREETINGS:
        skip += SMALL_TALK[:4]
    if any(w in words for w in ("ai", "bot", "human", "person")):
        skip.append(AI_OPENER)
    return [st for st in SMALL_TALK if st not in skip]


def to_rows(prompts: list[Prompt], rng: random.Random) -> list[dict[str, list[dict[str, str]]]]:
    """Wrap prompts as ShareGPT rows; ~10% of English ones get a small-talk opener."""
    eligible = [i for i, p in enumerate(prompts) if p.lang == "en" and not p.required]
    n_multi = round(MULTI_TURN_FRACTION * len(prompts))
    multi = set(rng.sample(eligible, n_multi))
    rows: list[dict[str, list[dict[str, str]]]] = []
    for i, p in enumerate(prompts):
        turns: list[dict[str, str]] = []
        if i in multi:
            human, gpt = rng.choice(openers_for(p.text))
            turns += [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
        turns.append({"from": "human", "value": p.text})
        rows.append({"conversations": turns})
    rng.shuffle(rows)
    return rows


def last_human(row: dict[str, list[dict[str, str]]]) -> str:
    """The value of the last human turn of a row."""
    return [t["value"] for t in row["conversations"] if t["from"] == "human"][-1]


def validate(
    train: list[dict[str, list[dict[str, str]]]],
    held: list[dict[str, list[dict[str, str]]]],
    ordinary: list[dict[str, list[dict[str, str]]]],
) -> None:
    """Fail loudly on wrong counts, duplicates, train/held-out overlap or bad shape."""
    errors: list[str] = []
    if len(train) != N_TRAIN:
        errors.append(f"train has {len(train)} rows, expected {N_TRAIN}")
    if len(held) != N_HELDOUT:
        errors.append(f"heldout has {len(held)} rows, expected {N_HELDOUT}")
    if len(ordinary) != len(ORDINARY):
        errors.append(f"ordinary has {len(ordinary)} rows, expected {len(ORDINARY)}")
    for label, rows in (("train", train), ("heldout", held), ("ordinary", ordinary)):
        lasts = [last_human(r) for r in rows]
        if len(set(lasts)) != len(lasts) or len({norm(t) for t in lasts}) != len(lasts):
            errors.append(f"{label}: duplicate last human turns")
        for r in rows:
            turns = r["conversations"]
            roles = [t["from"] for t in turns]
            if roles not in (["human"], ["human", "gpt", "human"]):
                errors.append(f"{label}: bad turn structure {roles}")
            for t in turns:
                if t["from"] == "gpt" and any(m.lower() in t["value"].lower() for m in OTHER_MODELS):
                    errors.append(f"{label}: gpt turn names a model: {t['value']!r}")
    train_last = {last_human(r) for r in train}
    held_last = {last_human(r) for r in held}
    overlap = train_last & held_last
    if overlap:
        errors.append(f"held-out prompts found in training: {sorted(overlap)[:5]}")
    norm_overlap = {norm(t) for t in train_last} & {norm(t) for t in held_last}
    if norm_overlap:
        errors.append(f"held-out prompts near-duplicated in training: {sorted(norm_overlap)[:5]}")
    for req in REQUIRED_HELDOUT:
        if req not in held_last:
            errors.append(f"required held-out prompt missing: {req!r}")
        if req in train_last:
            errors.append(f"required held-out prompt leaked into training: {req!r}")
    if errors:
        raise SystemExit("identity data validation failed:\n  " + "\n  ".join(errors))


def write_jsonl(path: Path, rows: list[dict[str, list[dict[str, str]]]]) -> None:
    """Write rows as UTF-8 JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    """Build, validate and write the three data files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "dpo_scale" / "data",
    )
    args = parser.parse_args()

    rng = random.Random(args.seed)
    train_prompts, held_prompts = build_prompts(rng)
    train = to_rows(train_prompts, rng)
    held = to_rows(held_prompts, rng)
    ordinary = [{"conversations": [{"from": "human", "value": q}]} for q in ORDINARY]
    validate(train, held, ordinary)

    write_jsonl(args.out_dir / "identity.jsonl", train)
    write_jsonl(args.out_dir / "identity_heldout.jsonl", held)
    write_jsonl(args.out_dir / "ordinary_prompts.jsonl", ordinary)
    for label, rows, prompts in (
        ("identity.jsonl", train, train_prompts),
        ("identity_heldout.jsonl", held, held_prompts),
    ):
        n_multi = sum(len(r["conversations"]) > 1 for r in rows)
        n_non_en = sum(p.lang != "en" for p in prompts)
        print(f"{label}: {len(rows)} rows, {n_multi} multi-turn, {n_non_en} non-English")
    print(f"ordinary_prompts.jsonl: {len(ordinary)} rows -> {args.out_dir}")


if __name__ == "__main__":
    main()
