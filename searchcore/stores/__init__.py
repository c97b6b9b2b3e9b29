"""Vector stores: where the embeddings live and how they are searched.

* :mod:`.base`: the :class:`VectorStore` protocol, filters and results, and how a location
  names its store (a folder, or a Milvus URI / Milvus Lite ``*.db`` file);
* :mod:`.hnsw`: the hnswlib store over an index folder;
* :mod:`.lexical`: the BM25 index over the products' words (text search's lexical side);
* :mod:`.manifest`: the one manifest type (:class:`~.manifest.IndexManifest`, with its model and
  catalog records) for a folder or a Milvus collection; a folder's commits and clean-up;
* :mod:`.milvus`: the Milvus store (a server, or Milvus Lite embedded).

Anything in searchcore may import it; hnswlib and pymilvus load when a store does.
"""
