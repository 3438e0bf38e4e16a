"""fairseq-kd: knowledge distillation for NMT as fairseq plugins (``--user-dir fairseq_kd``).

The tested stack is pinned in ``requirements.txt`` and installed by
``scripts/setup_env.sh``; ``install_requires`` only names ranges that the pinned
stack satisfies, so ``pip install -e .`` never replaces torch with a CUDA build.
"""
from setuptools import find_packages, setup

setup(
    name="fairseq-kd",
    version="0.1.0",
    description="Word- and sequence-level knowledge distillation for fairseq NMT",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["fairseq_kd", "fairseq_kd.*"]),
    install_requires=[
        "torch>=2.0",
        "numpy<2",
        "fairseq-fixed>=0.12.3",
        "sacrebleu>=2.3,<3",
        "sentencepiece>=0.1.99",
        "tqdm",
    ],
    extras_require={"ct2": ["ctranslate2>=4.0"], "plot": ["matplotlib>=3.7"], "test": ["pytest>=7"],
                    # converting Hugging Face teachers (OPUS-MT/Marian, NLLB, M2M100) for --teacher-ct2
                    "teachers": ["ctranslate2>=4.0", "transformers>=4.40"]},
    entry_points={
        "console_scripts": [
            "fairseq-kd-cache = fairseq_kd.cli.cache:cli_main",
            "fairseq-kd-distill = fairseq_kd.cli.distill:cli_main",
            "fairseq-kd-noise = fairseq_kd.cli.noise:cli_main",
            "fairseq-kd-score = fairseq_kd.cli.score:cli_main",
            "fairseq-kd-report = fairseq_kd.cli.report:cli_main",
            "fairseq-kd-prune = fairseq_kd.cli.prune:cli_main",
            "fairseq-kd-study = fairseq_kd.cli.study:cli_main",
            "fairseq-kd-status = fairseq_kd.cli.status:cli_main",
            "fairseq-kd-ladder = fairseq_kd.cli.ladder:cli_main",
            "fairseq-kd-export = fairseq_kd.cli.export:cli_main",
            "fairseq-kd-translate = fairseq_kd.cli.translate:cli_main",
        ]
    },
)
