import sys, glob, numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
from splicer.encoders import load_encoder
from splicer.evaluate import embed
from splicer.data.format import load_dataset
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import confusion_matrix
data = Path(sys.argv[1]); ds = load_dataset(data / "t_cells")
for run in sys.argv[2:]:
    for enc in sorted(glob.glob(run)):
        f = embed(load_encoder(Path(enc) / "encoder.pt"), np.asarray(ds.images))
        y = np.asarray(ds.labels); tr, te = ds.split == 0, ds.split == 2
        sc = StandardScaler().fit(f[tr]); clf = LogisticRegression(C=0.1, max_iter=3000).fit(sc.transform(f[tr]), y[tr])
        cm = confusion_matrix(y[te], clf.predict(sc.transform(f[te])))
        print(Path(enc).name, (cm.diagonal() / cm.sum(1)).round(2), cm.tolist())
