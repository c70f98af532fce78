# Registers InferenceLab's conversation_aware with LMCache when this directory is on PYTHONPATH
# (inferencelab_cache_policy.py). Silent when LMCache is not installed.
try:
    import inferencelab_cache_policy

    inferencelab_cache_policy.register()
except ImportError:
    pass
