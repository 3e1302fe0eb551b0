// Bouncy Castle side of the S/MIME interop tests (test_smime_bouncycastle.py).
// Keys are PKCS#8 DER, certificates DER. Exit status 0 means success.
//
//   verify  <sig.der> <content|->                  every SignerInfo must verify
//   sign    <cert> <key> <keyalg> <sigalg> <content> <out> <detached>
//   encrypt <cert> <content> <out> <kdf-oid>       kari to an X25519/EC recipient
//   decrypt <der> <cert> <key> <keyalg> <out>      EnvelopedData or AuthEnvelopedData

import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.PrivateKey;
import java.security.Security;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.Collection;
import java.util.List;

import org.bouncycastle.asn1.ASN1ObjectIdentifier;
import org.bouncycastle.asn1.cms.ContentInfo;
import org.bouncycastle.asn1.cms.CMSObjectIdentifiers;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.jcajce.JcaCertStore;
import org.bouncycastle.cms.CMSAlgorithm;
import org.bouncycastle.cms.CMSAuthEnvelopedData;
import org.bouncycastle.cms.CMSEnvelopedData;
import org.bouncycastle.cms.CMSEnvelopedDataGenerator;
import org.bouncycastle.cms.CMSProcessableByteArray;
import org.bouncycastle.cms.CMSSignedData;
import org.bouncycastle.cms.CMSSignedDataGenerator;
import org.bouncycastle.cms.KeyTransRecipientInformation;
import org.bouncycastle.cms.RecipientInformation;
import org.bouncycastle.cms.RecipientInformationStore;
import org.bouncycastle.cms.SignerInformation;
import org.bouncycastle.cms.jcajce.JceCMSContentEncryptorBuilder;
import org.bouncycastle.cms.jcajce.JceKeyAgreeEnvelopedRecipient;
import org.bouncycastle.cms.jcajce.JceKeyAgreeRecipientInfoGenerator;
import org.bouncycastle.cms.jcajce.JceKeyTransEnvelopedRecipient;
import org.bouncycastle.cms.jcajce.JcaSimpleSignerInfoGeneratorBuilder;
import org.bouncycastle.cms.jcajce.JcaSimpleSignerInfoVerifierBuilder;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.util.Store;

public class BcInterop {
    static X509Certificate cert(String path) throws Exception {
        return (X509Certificate) CertificateFactory.getInstance("X.509", "BC")
            .generateCertificate(Files.newInputStream(Path.of(path)));
    }

    static PrivateKey key(String path, String alg) throws Exception {
        return KeyFactory.getInstance(alg, "BC")
            .generatePrivate(new PKCS8EncodedKeySpec(Files.readAllBytes(Path.of(path))));
    }

    static byte[] read(String path) throws Exception {
        return Files.readAllBytes(Path.of(path));
    }

    public static void main(String[] a) throws Exception {
        Security.addProvider(new BouncyCastleProvider());
        switch (a[0]) {
            case "verify": {
                CMSSignedData sd = a[2].equals("-")
                    ? new CMSSignedData(read(a[1]))
                    : new CMSSignedData(new CMSProcessableByteArray(read(a[2])), read(a[1]));
                Store<X509CertificateHolder> certs = sd.getCertificates();
                int good = 0;
                for (SignerInformation si : sd.getSignerInfos().getSigners()) {
                    @SuppressWarnings("unchecked")
                    Collection<X509CertificateHolder> found = certs.getMatches(si.getSID());
                    X509CertificateHolder holder = found.iterator().next();
                    if (!si.verify(new JcaSimpleSignerInfoVerifierBuilder().setProvider("BC").build(holder))) {
                        System.out.println("BAD");
                        System.exit(1);
                    }
                    good++;
                }
                System.out.println("OK " + good);
                break;
            }
            case "sign": {
                X509Certificate c = cert(a[1]);
                PrivateKey k = key(a[2], a[3]);
                CMSSignedDataGenerator gen = new CMSSignedDataGenerator();
                gen.addSignerInfoGenerator(new JcaSimpleSignerInfoGeneratorBuilder().setProvider("BC").build(a[4], k, c));
                gen.addCertificates(new JcaCertStore(List.of(c)));
                boolean detached = Boolean.parseBoolean(a[7]);
                CMSSignedData sd = gen.generate(new CMSProcessableByteArray(read(a[5])), !detached);
                Files.write(Path.of(a[6]), sd.getEncoded("DER"));
                break;
            }
            case "encrypt": {
                X509Certificate c = cert(a[1]);
                String keyAlg = c.getPublicKey().getAlgorithm();
                KeyPairGenerator kpg = KeyPairGenerator.getInstance(keyAlg.equals("EC") ? "EC" : "X25519", "BC");
                if (keyAlg.equals("EC")) {
                    kpg.initialize(new java.security.spec.ECGenParameterSpec("P-256"));
                }
                KeyPair ephemeral = kpg.generateKeyPair();
                JceKeyAgreeRecipientInfoGenerator kari = new JceKeyAgreeRecipientInfoGenerator(
                    new ASN1ObjectIdentifier(a[4]), ephemeral.getPrivate(), ephemeral.getPublic(),
                    CMSAlgorithm.AES256_WRAP);
                kari.addRecipient(c).setProvider("BC");
                CMSEnvelopedDataGenerator gen = new CMSEnvelopedDataGenerator();
                gen.addRecipientInfoGenerator(kari);
                CMSEnvelopedData ed = gen.generate(
                    new CMSProcessableByteArray(read(a[2])),
                    new JceCMSContentEncryptorBuilder(CMSAlgorithm.AES256_CBC).setProvider("BC").build());
                Files.write(Path.of(a[3]), ed.getEncoded());
                break;
            }
            case "decrypt": {
                X509Certificate c = cert(a[2]);
                PrivateKey k = key(a[3], a[4]);
                byte[] der = read(a[1]);
                ContentInfo info = ContentInfo.getInstance(der);
                RecipientInformationStore recipients;
                if (info.getContentType().equals(CMSObjectIdentifiers.authEnvelopedData)) {
                    recipients = new CMSAuthEnvelopedData(der).getRecipientInfos();
                } else {
                    recipients = new CMSEnvelopedData(der).getRecipientInfos();
                }
                X509CertificateHolder holder = new X509CertificateHolder(c.getEncoded());
                byte[] plain = null;
                for (RecipientInformation ri : recipients.getRecipients()) {
                    if (!ri.getRID().match(holder)) {
                        continue;
                    }
                    if (ri instanceof KeyTransRecipientInformation) {
                        plain = ri.getContent(new JceKeyTransEnvelopedRecipient(k).setProvider("BC"));
                    } else {
                        plain = ri.getContent(new JceKeyAgreeEnvelopedRecipient(k).setProvider("BC"));
                    }
                }
                if (plain == null) {
                    System.out.println("NO RECIPIENT");
                    System.exit(2);
                }
                Files.write(Path.of(a[5]), plain);
                break;
            }
            default:
                throw new IllegalArgumentException(a[0]);
        }
    }
}
