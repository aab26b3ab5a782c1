"""Installs the AssembleNet toolkit: model/, preprocessing/, pipelines/, dags/ and the recipes configs/*.json."""

from setuptools import find_packages, setup

CORE = [
    "numpy>=1.26",
    "keras>=3.10",
    "tensorflow>=2.19",  # keras-hub (tensorflow-text) needs the full wheel; two TF wheels would clash
    "tensorboard",  # the training run's logs/ (Keras TensorBoard callback); TF no longer pulls it in
    "tqdm",
    "matplotlib",
    "protobuf>=4.21",  # preprocessing/schema.py writes and parses the records without TensorFlow
    "google-crc32c",  # TFRecord framing checksums (preprocessing/loader.py)
]
EXTRAS = {
    "all": [
        "apache-beam>=2.60",
        "google-crc32c",
        "apache-airflow>=3.0",
        "apache-airflow-providers-celery",  # CeleryExecutor (GPU/CPU queues); brings celery[redis]
        # celery 5.7 dropped celery.backends.database.retry, which the Celery provider (3.26) imports at
        # worker start: with 5.7 every `airflow celery worker` exits 1 (CI, 2026-12-02). Lift when the
        # provider follows.
        "celery>=5.5,<5.7",
        "opencv-contrib-python-headless>=4.10",
        "scikit-video",
        "keras-hub",
    ],
    # mutmut: `make mutation` (docs/testing.md), pinned because its config keys change between majors.
    "dev": ["pytest", "ruff", "scikit-learn", "selenium", "mutmut>=3.8,<4"],
    "jax": ["jax[cpu]"],
    # What the TensorFlow-free input path needs beside keras + jax (docs/training.md "Input path").
    "tffree": ["protobuf>=4.21", "google-crc32c", "opencv-python-headless>=4.10", "numpy>=1.26"],
}

setup(
    name="assemblenet",
    version="0.1.0",
    description="AssembleNet, AssembleNet++ and AttentionNAS for video activity recognition",
    python_requires=">=3.11",
    packages=find_packages(include=["model*", "preprocessing*", "pipelines*", "ablation*", "dags*", "configs"]),
    package_data={"configs": ["*.json"]},  # `assemblenet train --config NAME` finds them beside pipelines/
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["assemblenet=pipelines.cli:main"]},
)
