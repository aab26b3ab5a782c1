import os

# Model tests run under both backends: `make test` sets KERAS_BACKEND; default to TensorFlow.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
